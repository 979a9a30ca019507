"""Delayed messages from Python (issue 16): publish(..., delay=) and
deliver_at=, create_topic(delay_slots=), Sample.deliver_at, the schedule's
counts in describe(), and the errors a user can hit. shmbusd (the real
daemon of the `bus` fixture) is the mover."""

import time

import pytest

import shmbus
from conftest import wait_until


def test_delay_and_deliver_at_round_trip(bus):
    bus.create_topic("t", slots=16, slot_size=128, delay_slots=8)
    sub = bus.subscriber("t", group="g", start="earliest")
    pub = bus.publisher("t")
    far = time.time() + 3600
    pub.publish(b"much later", deliver_at=far)
    before = time.time()
    pub.publish(b"soon", key="k", headers={"tag": "TagA"}, delay=0.15)
    pub.publish(b"now")
    s = sub.receive(timeout=10)
    with s:
        assert bytes(s) == b"now" and s.sequence == 0 and s.deliver_at is None
    s = sub.receive(timeout=10)
    seen = time.time()
    with s:
        assert bytes(s) == b"soon"
        assert bytes(s.key) == b"k" and s.headers == {"tag": "TagA"}
        assert s.sequence == 1
        assert before + 0.15 <= s.deliver_at <= seen
        assert s.deliver_at_ns == pytest.approx(s.deliver_at * 1e9, abs=1e3)
    # The mover retires the entry just after the publish the subscriber saw.
    assert wait_until(lambda: bus.describe("t").moved == 1, 10)
    st = bus.describe("t")
    assert st.delay_slots == 8
    assert st.scheduled == 1 and st.overdue == 0 and st.moved == 1
    assert st.next_due_ns == pytest.approx(far * 1e9, abs=1e3)
    d = st.as_dict()
    assert d["scheduled"] == 1 and d["delay_slots"] == 8


def test_a_time_in_the_past_delivers_at_once(bus):
    bus.create_topic("t", slots=16, slot_size=64, delay_slots=4)
    sub = bus.subscriber("t", group="g", start="earliest")
    pub = bus.publisher("t")
    pub.publish(b"old", deliver_at=1.0)
    pub.publish(b"neg", delay=-3)
    got = []
    for _ in range(2):
        with sub.receive(timeout=10) as s:
            got.append((bytes(s), s.deliver_at))
    assert got[0] == (b"old", 1.0)
    assert got[1][0] == b"neg"


def test_errors_say_what_to_do(bus):
    bus.create_topic("plain", slots=16, slot_size=64)
    pub = bus.publisher("plain")
    with pytest.raises(shmbus.InvalidArgument, match="delay_slots=N"):
        pub.publish(b"x", delay=1)
    bus.create_topic("t", slots=16, slot_size=64, delay_slots=1, policy="reject")
    pub = bus.publisher("t")
    with pytest.raises(shmbus.InvalidArgument, match="not both"):
        pub.publish(b"x", delay=1, deliver_at=time.time())
    with pytest.raises(shmbus.InvalidArgument, match="not a usable number"):
        pub.publish(b"x", delay=float("nan"))
    with pytest.raises(TypeError, match="number of seconds"):
        pub.publish(b"x", delay="5s")
    with pytest.raises(shmbus.TooLarge, match="8-byte due time"):
        pub.publish(b"x" * 64, delay=1)
    pub.publish(b"x", delay=3600)
    with pytest.raises(shmbus.WouldBlock, match="schedule is full"):
        pub.publish(b"y", delay=3600)
    assert pub.try_publish(b"y", delay=3600) is False
    assert bus.describe("t").scheduled == 1
    with pytest.raises(shmbus.InvalidArgument, match="single_producer"):
        bus.create_topic("sp", single_producer=True, delay_slots=4)
