"""Topic lifecycle from Python: a deleted topic is reported, nothing is lost."""

import os
import threading

import pytest

import shmbus
from conftest import asleep_on_shmbus, wait_until


def test_delete_tells_subscribers_after_the_drain_and_publishers_at_once(bus):
    bus.create_topic("t", slots=8, slot_size=32)
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    pub.publish(b"one")
    got, raised = [], []

    def reads():
        try:
            while True:
                s = sub.receive(timeout=None)
                got.append(bytes(s))
                s.release()
        except shmbus.TopicDeleted as e:
            raised.append(e)

    th = threading.Thread(target=reads)
    th.start()
    # Asleep in receive (or not: either way it must end with TopicDeleted).
    wait_until(lambda: asleep_on_shmbus(os.getpid(), th.native_id), 10)
    pub.publish(b"two")
    bus.delete_topic("t")
    th.join(timeout=30)
    assert not th.is_alive(), "the delete did not end the waiting receive"
    assert got == [b"one", b"two"]
    assert len(raised) == 1 and "'t' was deleted" in str(raised[0])
    with pytest.raises(shmbus.TopicDeleted):
        pub.publish(b"late")
    with pytest.raises(shmbus.TopicDeleted):
        sub.try_receive()
    assert issubclass(shmbus.TopicDeleted, shmbus.Error)


def test_delete_if_unused_refuses_while_attached(bus):
    bus.create_topic("t", slots=8, slot_size=32)
    sub = bus.subscriber("t")
    with pytest.raises(shmbus.InUse, match="1 member"):
        bus.delete_topic("t", if_unused=True)
    sub.close()
    bus.delete_topic("t", if_unused=True)
    with pytest.raises(shmbus.NotFound):
        bus.describe("t")


def test_published_counts_every_message_not_only_live_producers(bus):
    bus.create_topic("t", slots=8, slot_size=32)
    with bus.publisher("t") as pub:
        for _ in range(3):
            pub.publish(b"x")
        pub.loan(4)  # dropped unpublished: abandoned, not published
    d = bus.describe("t")
    assert (d.producers, d.published, d.abandoned, d.tail) == (0, 3, 1, 4)


def test_a_start_or_seek_past_the_tail_is_refused(bus):
    bus.create_topic("t", slots=8, slot_size=32)
    pub = bus.publisher("t")
    pub.publish(b"a")
    with pytest.raises(shmbus.InvalidArgument, match="at most 1"):
        bus.subscriber("t", start=999999)
    sub = bus.subscriber("t", start=1)
    with pytest.raises(shmbus.InvalidArgument, match="tail"):
        sub.seek(2)
    sub.seek(0)
    assert bytes(sub.receive(timeout=5)) == b"a"


def test_groups_describe_reset_delete(bus):
    bus.create_topic("t", slots=8, slot_size=32, max_groups=2)
    pub = bus.publisher("t")
    for i in range(3):
        pub.publish(bytes([i]))
    with bus.subscriber("t", group="billing", start="earliest") as member:
        held = member.receive(timeout=5)
        g = bus.describe_group("t", "billing")
        (m,) = g.member_seats
        assert (m.pid, m.held, m.received) == (os.getpid(), 0, 1)
        assert g.as_dict()["member_seats"][0]["held"] == 0
        with pytest.raises(shmbus.InUse):
            bus.delete_group("t", "billing")
        with pytest.raises(shmbus.InUse):
            bus.reset_group("t", "billing", "latest")
        held.release()
    assert bus.describe_group("t", "billing").position == 1  # kept after the member left
    bus.reset_group("t", "billing", "latest")
    assert bus.describe_group("t", "billing").position == 3
    bus.reset_group("t", "billing", 0)
    assert bus.describe_group("t", "billing").position == 0
    with pytest.raises(shmbus.InvalidArgument, match="tail"):
        bus.reset_group("t", "billing", 4)
    bus.delete_group("t", "billing")
    with pytest.raises(shmbus.NotFound):
        bus.describe_group("t", "billing")
    assert bus.describe("t").groups == []


def test_connect_daemon_uid_is_checked_and_passed(busenv):
    # Our own uid is always trusted; naming it again changes nothing.
    bus = shmbus.connect(busenv.name, socket=busenv.socket, autospawn=False,
                         daemon_uid=os.getuid())
    assert bus.daemon_pid > 0
    with pytest.raises(shmbus.InvalidArgument, match="daemon_uid"):
        shmbus.connect(busenv.name, socket=busenv.socket, autospawn=False, daemon_uid=-5)
