"""Consumer groups across Python processes."""

import json
import multiprocessing
import struct

import shmbus
from conftest import read_line, stop_process

STOP = 2**64 - 1


def test_group_members_in_processes_compete(busenv):
    n, members = 3000, 3
    bus = busenv.bus
    bus.create_topic("jobs", slots=64, slot_size=64)
    procs = [busenv.worker("member", "jobs", "workers") for _ in range(members)]
    try:
        for p in procs:
            assert read_line(p, 30) == "ready"
        # A second group (in this process) sees every message too.
        audit = bus.subscriber("jobs", group="audit")
        pub = bus.publisher("jobs", timeout=60)
        seen = []

        def publish(i):
            pub.publish(struct.pack("<Q", i))
            while (s := audit.try_receive()) is not None:
                seen.append(struct.unpack_from("<Q", s)[0])

        # One message per member first: each member takes one and then waits
        # for "go" (_worker.py), so every member gets a share however the
        # processes happen to be scheduled. Then they compete for the rest.
        for i in range(members):
            publish(i)
        for p in procs:
            assert read_line(p, 60) == "first"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for i in range(members, n):
            publish(i)
        for _ in range(members):
            pub.publish(struct.pack("<Q", STOP))
        results = []
        for p in procs:
            line = read_line(p, 60)
            assert not line.startswith("error"), line
            results.append(json.loads(line))
            assert stop_process(p, 10) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    got = sorted(i for r in results for i in r)
    assert got == list(range(n)), "each message goes to exactly one member"
    assert sum(1 for r in results if r) >= 2, [len(r) for r in results]
    for r in results:
        assert r == sorted(r)  # a member sees its share in order
    while (s := audit.receive(timeout=1)) is not None:
        seen.append(struct.unpack_from("<Q", s)[0])
    assert seen == list(range(n)) + [STOP] * members


def _spawned_member(bus_name, socket, topic, out):
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    sub = bus.subscriber(topic, group="mp")
    out.put(("ready", None))
    got = []
    for s in sub.iter(timeout=30):
        (i,) = struct.unpack_from("<Q", s)
        if i == STOP:
            break
        got.append(i)
    out.put(("done", got))


def test_group_members_with_multiprocessing_spawn(busenv):
    n = 2000
    busenv.bus.create_topic("mp", slots=32, slot_size=16)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_spawned_member, args=(busenv.name, busenv.socket, "mp", out))
             for _ in range(2)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            assert out.get(timeout=30) == ("ready", None)
        pub = busenv.bus.publisher("mp")
        for i in range(n):
            pub.publish(struct.pack("<Q", i))
        for _ in procs:
            pub.publish(struct.pack("<Q", STOP))
        results = []
        for _ in procs:
            kind, got = out.get(timeout=60)
            assert kind == "done"
            results.append(got)
        for p in procs:
            p.join(timeout=10)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    assert sorted(i for r in results for i in r) == list(range(n))
