"""Timeouts, full rings, the GIL during waits, Ctrl-C, threads, errors."""

import os
import signal
import threading
import time

import pytest

import shmbus
from conftest import asleep_on_shmbus, read_line, stop_process, wait_until


def test_receive_timeout(bus):
    bus.create_topic("t", slots=8, slot_size=16)
    sub = bus.subscriber("t")
    t0 = time.monotonic()
    assert sub.receive(timeout=0.3) is None
    waited = time.monotonic() - t0
    assert 0.29 <= waited < 1.0
    t0 = time.monotonic()
    assert sub.receive(timeout=0) is None
    assert sub.try_receive() is None
    assert time.monotonic() - t0 < 0.05
    with pytest.raises(shmbus.InvalidArgument):
        sub.receive(timeout=-1)


def test_full_ring_block_raises_timeout(bus):
    bus.create_topic("t", slots=2, slot_size=16, policy="block")
    sub = bus.subscriber("t")  # gates the ring without consuming
    pub = bus.publisher("t", timeout=0.3)
    pub.publish(b"a")
    pub.publish(b"b")
    assert pub.try_publish(b"c") is False
    assert pub.try_loan(4) is None
    t0 = time.monotonic()
    with pytest.raises(shmbus.Timeout) as e:
        pub.publish(b"c")
    assert 0.29 <= time.monotonic() - t0 < 1.0
    assert isinstance(e.value, TimeoutError) and isinstance(e.value, shmbus.Error)
    assert "'t'" in str(e.value)
    with pytest.raises(shmbus.Timeout):
        pub.loan(4)
    pub.timeout = 0
    with pytest.raises(shmbus.WouldBlock):
        pub.publish(b"c")
    # Room made while a publish waits lets it through.
    pub.timeout = 5
    threading.Timer(0.1, lambda: sub.receive(timeout=1).release()).start()
    pub.publish(b"c")
    assert sub.lag == 2


def test_full_ring_reject_raises_would_block(bus):
    bus.create_topic("t", slots=2, slot_size=16, policy="reject")
    bus.subscriber("t")
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    pub.publish(b"a")
    pub.publish(b"b")
    t0 = time.monotonic()
    with pytest.raises(shmbus.WouldBlock) as e:
        pub.publish(b"c")
    assert time.monotonic() - t0 < 0.1
    assert isinstance(e.value, BlockingIOError)
    assert pub.try_publish(b"c") is False
    assert sub.lag == 2


def test_receive_releases_the_gil(bus):
    bus.create_topic("t", slots=8, slot_size=16)
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    got = []
    th = threading.Thread(target=lambda: got.append(sub.receive(timeout=5)))
    th.start()
    # The thread is asleep inside receive (on the topic's futex, not the GIL's).
    assert wait_until(lambda: asleep_on_shmbus(os.getpid(), th.native_id), 10)
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.1:
        n += 1
    pub.publish(b"x")
    th.join(timeout=5)
    assert not th.is_alive()
    assert got[0] is not None and bytes(got[0]) == b"x"
    assert n > 1000


def test_threads_share_a_subscriber(bus):
    # Receives, releases and the GC of samples from several threads: every
    # message is taken exactly once, nothing crashes.
    n = 5000
    bus.create_topic("t", slots=256, slot_size=16)
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    results = [[] for _ in range(4)]

    def consume(out):
        # Release each sample before waiting for the next: a held sample stops
        # the ring from moving past it (the threads share one gate).
        k = 0
        while True:
            s = sub.receive(timeout=1)
            if s is None:
                return
            out.append(int.from_bytes(s, "little"))
            k += 1
            if k % 3 == 0:
                s.release()
            elif k % 3 == 1:
                with s:
                    pass
            else:
                del s  # freed by reference counting, in this thread

    threads = [threading.Thread(target=consume, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for i in range(n):
        pub.publish(i.to_bytes(8, "little"))
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    got = sorted(x for r in results for x in r)
    assert got == list(range(n))


def _interrupt(busenv, role):
    proc = busenv.worker(role, "t")
    try:
        assert read_line(proc, 20) == "waiting"
        # Inside the blocking call: asleep on the topic's futex.
        assert wait_until(lambda: asleep_on_shmbus(proc.pid), 10)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert read_line(proc, 5) == "interrupted"
        elapsed = time.monotonic() - t0
        assert stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert elapsed < 1.0, f"Ctrl-C took {elapsed:.3f} s"


def test_ctrl_c_interrupts_receive(busenv):
    busenv.bus.create_topic("t", slots=8, slot_size=16)
    _interrupt(busenv, "block-receive")


def test_ctrl_c_interrupts_blocked_publish(busenv):
    busenv.bus.create_topic("t", slots=4, slot_size=16)
    sub = busenv.bus.subscriber("t")  # gates the ring; never consumes
    _interrupt(busenv, "block-publish")
    assert sub.lag == 4


def test_errors_map_to_classes_with_cpp_messages(busenv, tmp_path):
    bus = busenv.bus
    bus.create_topic("t")
    with pytest.raises(shmbus.AlreadyExists, match=r"topic 't' already exists"):
        bus.create_topic("t")
    with pytest.raises(shmbus.NotFound, match=r"no topic 'nope'") as e:
        bus.open_topic("nope")
    assert isinstance(e.value, LookupError) and e.value.code == "not_found"
    with pytest.raises(shmbus.NotFound):
        bus.describe("nope")
    with pytest.raises(shmbus.NotFound):
        bus.subscriber("nope")
    with pytest.raises(shmbus.InvalidArgument, match=r"topic name 'a/b' contains '/'") as e:
        bus.create_topic("a/b")
    assert isinstance(e.value, ValueError)
    with pytest.raises(shmbus.InvalidArgument):
        bus.create_topic("odd", slots=3)
    with pytest.raises(shmbus.InvalidArgument, match="policy"):
        bus.create_topic("p", policy="drop")
    with pytest.raises(shmbus.InvalidArgument, match="wait"):
        bus.subscriber("t", wait="sometimes")
    bus.delete_topic("t")
    with pytest.raises(shmbus.NotFound):
        bus.delete_topic("t")
    with pytest.raises(shmbus.DaemonUnavailable, match="no shmbusd answers") as e:
        shmbus.connect(busenv.name, socket=str(tmp_path / "none.sock"), autospawn=False)
    assert isinstance(e.value, shmbus.Error)
    assert issubclass(shmbus.PermissionDenied, PermissionError)
    for cls in (shmbus.VersionMismatch, shmbus.Corrupt, shmbus.ResourceExhausted,
                shmbus.SystemFailure, shmbus.TooManyHeld, shmbus.Closed):
        assert issubclass(cls, shmbus.Error)


def test_resource_exhausted(bus):
    bus.create_topic("t", max_members=2)
    keep = [bus.subscriber("t", group="g") for _ in range(2)]
    with pytest.raises(shmbus.ResourceExhausted, match="member seats"):
        bus.subscriber("t", group="g")
    assert len(keep) == 2


def test_topics_and_describe(bus):
    bus.create_topic("a", slots=16, slot_size=128, policy="overwrite")
    bus.create_topic("b", slots=4, slot_size=32, single_producer=True)
    sub = bus.subscriber("a", group="workers", durable=True)
    pub = bus.publisher("a")
    pub.publish(b"1")
    topics = {t.name: t for t in bus.topics()}
    assert set(topics) == {"a", "b"}
    a = topics["a"]
    assert (a.slots, a.slot_size, a.policy, a.tail) == (16, 128, "overwrite", 1)
    assert topics["b"].single_producer and topics["b"].policy == "block"
    (g,) = a.groups
    assert (g.name, g.members, g.durable, g.lag) == ("workers", 1, True, 1)
    d = bus.describe("a").as_dict()
    assert d["groups"][0]["name"] == "workers" and d["producers"] == 1
    assert sub.group == "workers" and sub.policy == "overwrite"
    assert bus.open_topic("b").info().slots == 4
    assert os.path.exists(bus.socket_path)


def test_fork_child_cannot_use_or_destroy_the_parents_objects(busenv):
    import gc
    import json
    bus = busenv.bus
    bus.create_topic("t", slots=4, slot_size=16)
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    pub.publish(b"held")
    s = sub.receive(timeout=5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every use raises; dropping everything frees nothing
        code = 1
        try:
            out = []
            for use in (lambda: sub.receive(timeout=0), lambda: pub.publish(b"x"),
                        lambda: bytes(s), lambda: s.release(), lambda: bus.topics(),
                        lambda: pub.loan(1), lambda: sub.lag, lambda: sub.close()):
                try:
                    use()
                    out.append("no error")
                except shmbus.Error as e:
                    out.append("fork" if "fork() child" in str(e) else str(e))
            own = busenv.connect()  # a connection of the child's own works
            out.append([t.name for t in own.topics()])
            del own
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os.close(w)
            # Drop the parent's objects, as the end of the child would.
            del s, sub, pub, bus
            busenv.bus = None
            gc.collect()
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert out == ["fork"] * 8 + [["t"]]
    # The parent's seat and held sample are untouched.
    assert bytes(s) == b"held" and sub.holding == 1
    assert bus.describe("t").groups[0].members == 1
    pub.publish(b"next")
    s.release()
    assert bytes(sub.receive(timeout=5)) == b"next"
