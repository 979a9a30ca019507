"""At-least-once groups from Python (issue 17): delivery='at_least_once',
sample.redelivered / delivery_count, sample.nack() and the dead-letter topic,
with a real child process SIGKILLed while it holds samples."""

import signal

import pytest

import shmbus


def test_samples_a_killed_member_held_are_redelivered(busenv):
    bus = busenv.bus
    bus.create_topic("jobs", slots=16, slot_size=64)
    pub = bus.publisher("jobs")
    for i in range(4):
        pub.publish(b"m%d" % i)
    child = busenv.worker("hold-unacked", "jobs", "work", 2)
    try:
        assert child.stdout.readline().strip() == "holding"
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    sub = bus.subscriber("jobs", group="work", delivery="at_least_once")
    got = {}
    for _ in range(4):
        with sub.receive(timeout=30) as s:
            assert s is not None
            got[s.sequence] = (bytes(s), s.redelivered, s.delivery_count)
    assert got == {0: (b"m0", True, 2), 1: (b"m1", True, 2),
                   2: (b"m2", False, 1), 3: (b"m3", False, 1)}
    g = bus.describe_group("jobs", "work")
    assert g.delivery == "at_least_once"
    assert g.redelivered == 2
    assert g.as_dict()["unacked_orphans"] == 0


def test_nack_redelivers_then_dead_letters(bus):
    bus.create_topic("orders", slots=16, slot_size=128)
    sub = bus.subscriber("orders", group="work", start="earliest",
                         delivery="at_least_once", max_deliveries=2)
    bus.publisher("orders").publish(b"poison")
    counts = []
    while True:
        s = sub.receive(timeout=0.05)
        if s is None:
            break
        counts.append(s.delivery_count)
        s.nack()
        assert s.released
    assert counts == [1, 2]
    dlq = bus.subscriber("orders.dlq", start="earliest")
    with dlq.receive(timeout=10) as d:
        assert bytes(d) == b"poison"
        h = d.headers
        assert h["dlq.offset"] == "0" and h["dlq.reason"] == "nacked"
    assert bus.describe_group("orders", "work").dead_lettered == 1


def test_bad_delivery_arguments(bus):
    bus.create_topic("t", slots=16, slot_size=64)
    with pytest.raises(shmbus.InvalidArgument):
        bus.subscriber("t", delivery="twice")
    with pytest.raises(shmbus.InvalidArgument):
        bus.subscriber("t", delivery="at_least_once")  # no group name
    bus.subscriber("t", group="g", delivery="at_least_once")
    with pytest.raises(shmbus.InvalidArgument):
        bus.subscriber("t", group="g")  # the group is at_least_once
    plain = bus.subscriber("t", group="h", start="earliest")
    bus.publisher("t").publish(b"x")
    with plain.receive(timeout=10) as s:
        assert s.delivery_count == 1 and not s.redelivered
        with pytest.raises(shmbus.InvalidArgument):
            s.nack()
