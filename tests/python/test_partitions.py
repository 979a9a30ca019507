"""Partitions, keys, priority lanes and partitioned consumer groups (issue 15)
from Python: create_topic(partitions=, priorities=), publish(key=, partition=,
priority=), Sample.key/partition/priority, subscriber(mode=), seek/lag per
partition, and the per-partition status."""

import os
import time

import pytest

import shmbus
from conftest import wait_until

# ---- keys and partitions ---------------------------------------------------------


def drain(sub, n, timeout=10):
    """`n` samples as (partition, key bytes or None, payload bytes, sequence)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} messages came within {timeout} s"
        s = sub.receive(timeout=left)
        if s is None:
            continue
        with s:
            key = None if s.key is None else bytes(s.key)
            out.append((s.partition, key, bytes(s), s.sequence))
    return out


def test_keyed_publish_lands_on_partition_for_key(bus):
    n = 8
    bus.create_topic("t", slots=64, slot_size=128, partitions=n)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    assert (pub.partitions, pub.priorities) == (n, 0)
    assert (sub.partitions, sub.priorities) == (n, 0)
    keys = [f"user-{i}".encode() for i in range(40)]
    for i, k in enumerate(keys):
        pub.publish(b"v%d" % i, key=k)
    got = drain(sub, len(keys))
    assert len({p for p, _, _, _ in got}) > 1, "40 keys all on one partition"
    by_value = {v: (p, k) for p, k, v, _ in got}
    for i, k in enumerate(keys):
        assert by_value[b"v%d" % i] == (shmbus.partition_for_key(k, n), k)
    # Within a partition, offsets count from 0 in publish order.
    for p in range(n):
        seqs = [s for q, _, v, s in got if q == p]
        assert sorted(seqs) == list(range(len(seqs)))
    # The status counts each partition's messages, and their sum.
    st = bus.describe("t")
    assert st.partitions == n and st.priorities == 0
    tails = [ps.tail for ps in st.per_partition]
    assert [ps.partition for ps in st.per_partition] == list(range(n))
    for p in range(n):
        assert tails[p] == sum(1 for k in keys if shmbus.partition_for_key(k, n) == p)
    assert st.tail == sum(tails) == len(keys)
    d = st.as_dict()
    assert d["partitions"] == n and [x["tail"] for x in d["per_partition"]] == tails


def test_str_key_is_its_utf8_bytes_and_key_is_zero_copy(bus):
    bus.create_topic("t", slots=16, slot_size=64, partitions=4)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    pub.publish(b"payload", key="ключ-7")
    s = sub.receive(timeout=5)
    assert s is not None
    k = s.key
    assert isinstance(k, memoryview) and k.readonly
    assert k == "ключ-7".encode() and s.key_size == len("ключ-7".encode())
    assert s.partition == shmbus.partition_for_key("ключ-7".encode(), 4)
    assert bytes(s) == b"payload" and s.size == 7
    # The key's memoryview keeps the slot held, as the payload's buffers do.
    assert s.exports == 1
    assert s.release() is False and sub.holding == 1
    assert bytes(k) == "ключ-7".encode()
    with pytest.raises(TypeError):
        k[0] = 0  # read-only
    with pytest.raises(shmbus.Closed):
        s.key  # noqa: B018  (released: its data may no longer be read)
    assert s.partition == shmbus.partition_for_key("ключ-7", 4)  # metadata stays
    k.release()
    assert sub.holding == 0


def test_unkeyed_and_empty_key_have_no_key(bus):
    bus.create_topic("t", slots=16, slot_size=64, partitions=2)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    pub.publish(b"a")
    pub.publish(b"b", key=b"")
    pub.publish(b"c", key=None)
    for _, key, _, _ in drain(sub, 3):
        assert key is None


def test_explicit_partition_wins_over_the_key_which_is_kept(bus):
    bus.create_topic("t", slots=16, slot_size=64, partitions=4)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    key = b"user-7"
    other = (shmbus.partition_for_key(key, 4) + 1) % 4
    pub.publish(b"explicit", key=key, partition=other)
    assert pub.try_publish(b"plain", partition=3) is True
    got = drain(sub, 2)
    assert (other, key, b"explicit") in [(p, k, v) for p, k, v, _ in got]
    assert (3, None, b"plain") in [(p, k, v) for p, k, v, _ in got]


def test_unkeyed_messages_stick_to_one_partition_for_a_run(bus):
    bus.create_topic("t", slots=128, slot_size=16, partitions=4)
    pub = bus.publisher("t")
    for i in range(64):  # Publisher::kStickyRun
        pub.publish(b"%d" % i)
    tails = [p.tail for p in bus.describe("t").per_partition]
    assert sorted(tails) == [0, 0, 0, 64]
    pub.publish(b"next run")
    after = [p.tail for p in bus.describe("t").per_partition]
    assert sorted(after) == [0, 0, 1, 64], "the 65th message starts a run on another partition"


def test_loan_with_key_and_partition(bus):
    bus.create_topic("t", slots=16, slot_size=64, partitions=4)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    with pub.loan(5, key="k1") as buf:
        buf[:] = b"hello"
    loan = pub.try_loan(3, key=b"k2", partition=2)
    assert loan is not None and loan.partition == 2 and loan.priority == 0
    memoryview(loan)[:3] = b"abc"
    loan.publish()
    got = {v: (p, k) for p, k, v, _ in drain(sub, 2)}
    assert got[b"hello"] == (shmbus.partition_for_key("k1", 4), b"k1")
    assert got[b"abc"] == (2, b"k2")


def test_key_and_payload_must_fit_the_slot(bus):
    bus.create_topic("t", slots=8, slot_size=64)
    pub = bus.publisher("t")
    pub.publish(b"x" * 48, key=b"k" * 10)  # 10 bytes of key take 16 in the slot: 64
    with pytest.raises(shmbus.TooLarge, match=r"49 bytes with a key of 10 bytes \(16 in the slot"):
        pub.publish(b"x" * 49, key=b"k" * 10)
    with pytest.raises(shmbus.TooLarge, match=r"1024 bytes a key may have"):
        pub.publish(b"", key=b"k" * 1025)
    with pytest.raises(shmbus.TooLarge):
        pub.loan(49, key=b"k" * 10)
    with pytest.raises(TypeError, match="key of bytes"):
        pub.publish(b"x", key=7)


def test_batch_keys_and_partition(bus):
    bus.create_topic("t", slots=16, slot_size=64, partitions=2)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    for i in range(3):
        pub.publish(b"m%d" % i, key=b"key%d" % i, partition=1)
    batch = sub.receive_batch(8, timeout=5)
    assert batch is not None and batch.partition == 1 and len(batch) == 3
    assert [bytes(item.key) for item in batch] == [b"key0", b"key1", b"key2"]
    assert [bytes(item) for item in batch] == [b"m0", b"m1", b"m2"]
    assert {item.partition for item in batch} == {1}
    key = batch[0].key
    assert batch.release() is False  # the key's memoryview holds the batch's slots
    assert bytes(key) == b"key0"
    del key
    assert sub.holding == 0


def test_receive_copy_reports_partition_and_key_size(bus):
    bus.create_topic("t", slots=16, slot_size=64, partitions=4)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    pub.publish(b"abc", key=b"kk", partition=3)
    buf = bytearray(64)
    info = sub.receive_copy(buf, timeout=5)
    assert info is not None
    assert len(info) == 4  # the tuple of before: unpacking code keeps working
    size, sequence, _, _ = info
    assert (size, sequence, info.partition, info.key_size) == (3, 0, 3, 2)
    assert buf[:size] == b"abc"  # the payload only


def test_seek_and_lag_per_partition(bus):
    bus.create_topic("t", slots=16, slot_size=64, partitions=3)
    sub = bus.subscriber("t", group="g", start="earliest")
    pub = bus.publisher("t")
    for i in range(5):
        pub.publish(b"%d" % i, partition=1)
    pub.publish(b"p2", partition=2)
    assert [sub.lag_of(p) for p in range(3)] == [0, 5, 1]
    assert sub.lag == 6
    sub.seek(3, partition=1)
    assert sub.position_of(1) == 3 and sub.lag_of(1) == 2
    assert sub.position == 3 + 0 + 0
    got = drain(sub, 3)
    assert sorted((p, v) for p, _, v, _ in got) == [(1, b"3"), (1, b"4"), (2, b"p2")]
    with pytest.raises(shmbus.InvalidArgument, match=r"partition=3: topic 't' has 3 partitions"):
        sub.lag_of(3)
    with pytest.raises(shmbus.InvalidArgument, match="partition=3"):
        sub.seek(0, partition=3)
    with pytest.raises(shmbus.InvalidArgument, match="past|published up to"):
        sub.seek(9, partition=2)
    gs = bus.describe_group("t", "g")
    assert gs.mode == "shared"
    assert [(p.partition, p.position, p.lag) for p in gs.per_partition] == [
        (0, 0, 0), (1, 5, 0), (2, 1, 0)]
    assert all(p.owner_pid is None and p.target_seat is None for p in gs.per_partition)


# ---- priority lanes --------------------------------------------------------------


def test_priority_topic_delivers_backlog_highest_first_in_publish_order(bus):
    bus.create_topic("jobs", slots=32, slot_size=32, priorities=4)
    sub = bus.subscriber("jobs", start="earliest")
    pub = bus.publisher("jobs")
    assert (pub.partitions, pub.priorities) == (1, 4)
    backlog = [0, 2, 1, 3, 2, 0, 3, 1, 1, 0, 2, 3]
    for i, pr in enumerate(backlog):
        pub.publish(b"%d" % i, priority=pr)
    pub.publish(b"default")  # no priority: lane 0, the lowest
    expected = sorted(range(len(backlog)), key=lambda i: (-backlog[i], i))
    got = []
    deadline = time.monotonic() + 10
    while len(got) < len(backlog) + 1:
        assert time.monotonic() < deadline, f"only {len(got)} came"
        s = sub.receive(timeout=1)
        if s is not None:
            with s:
                got.append((s.priority, s.partition, bytes(s)))
    assert got[:-1] == [(backlog[i], 0, b"%d" % i) for i in expected]
    assert got[-1] == (0, 0, b"default")
    st = bus.describe("jobs")
    assert (st.partitions, st.priorities) == (1, 4)
    assert [p.tail for p in st.per_partition] == [backlog.count(pr) + (pr == 0) for pr in range(4)]


def test_priority_errors(bus):
    bus.create_topic("jobs", slots=8, slot_size=32, priorities=4)
    bus.create_topic("plain", slots=8, slot_size=32)
    pub = bus.publisher("jobs")
    with pytest.raises(shmbus.InvalidArgument, match=r"priority=4: topic 'jobs' has 4 priority lanes"):
        pub.publish(b"x", priority=4)
    with pytest.raises(shmbus.InvalidArgument, match=r"partition=1: topic 'jobs' is a priority topic"):
        pub.publish(b"x", partition=1)
    with pytest.raises(shmbus.InvalidArgument, match=r"priority=-1: expected None or an int >= 0"):
        pub.publish(b"x", priority=-1)
    plain = bus.publisher("plain")
    with pytest.raises(shmbus.InvalidArgument, match=r"'plain' has no priority lanes"):
        plain.publish(b"x", priority=1)
    plain.publish(b"x", priority=0)  # the one lane there is
    with pytest.raises(shmbus.InvalidArgument, match=r"priority lane"):
        plain.try_loan(1, priority=2)


# ---- partitioned consumer groups ----------------------------------------------------


def settle(a, b, parts, timeout=10):
    """Lets two members of a partitioned group follow its assignment (each
    receives, with a timeout) until they own disjoint partitions covering
    all of them, none empty. Fails after `timeout` seconds."""
    received = []

    def settled():
        for m in (a, b):
            s = m.receive(timeout=0.05)
            if s is not None:
                received.append(s.partition)
                s.release()
        oa, ob = set(a.owned_partitions), set(b.owned_partitions)
        return oa and ob and not oa & ob and oa | ob == set(range(parts))

    assert wait_until(settled, timeout, step=0), (
        f"no settled assignment within {timeout} s: {a.owned_partitions} and "
        f"{b.owned_partitions}")
    return received


def test_partitioned_members_own_disjoint_partitions(bus):
    parts = 4
    bus.create_topic("t", slots=16, slot_size=64, partitions=parts)
    pub = bus.publisher("t")
    a = bus.subscriber("t", group="g", start="earliest", mode="partitioned")
    assert a.mode == "partitioned" and a.owned_partitions == []  # nothing before it receives
    for p in range(parts):
        pub.publish(b"first-%d" % p, partition=p)
    # a takes every partition as it receives, and holds one sample of each.
    held = [a.receive(timeout=5) for _ in range(parts)]
    assert all(s is not None for s in held)
    assert sorted(s.partition for s in held) == list(range(parts))
    assert a.owned_partitions == list(range(parts))

    b = bus.subscriber("t", group="g", mode="partitioned")
    assert b.owned_partitions == []
    # While a holds samples of every partition, none can go to b, however
    # often both receive.
    for _ in range(5):
        assert a.receive(timeout=0.05) is None
        assert b.receive(timeout=0.05) is None
        assert b.owned_partitions == [] and a.owned_partitions == list(range(parts))
    gs = bus.describe_group("t", "g")
    assert gs.mode == "partitioned" and gs.members == 2
    seats = sorted(m.seat for m in gs.member_seats)
    targets = [p.target_seat for p in gs.per_partition]
    assert sorted(targets) == sorted(seats * (parts // 2)), "two partitions each"
    assert all(p.owner_pid == os.getpid() for p in gs.per_partition)

    for s in held:
        s.release()
    assert settle(a, b, parts) == []  # nothing was left to receive
    assert len(a.owned_partitions) == len(b.owned_partitions) == parts // 2
    gs = bus.describe_group("t", "g")
    assert all(p.owner_pid == os.getpid() for p in gs.per_partition)
    assert all(p.target_seat is not None for p in gs.per_partition)
    assert gs.as_dict()["mode"] == "partitioned"

    # Each member takes only what its own partitions carry.
    keys = [b"k%d" % i for i in range(32)]
    for k in keys:
        pub.publish(k, key=k)
    got = {id(a): [], id(b): []}
    deadline = time.monotonic() + 10
    while sum(map(len, got.values())) < len(keys):
        assert time.monotonic() < deadline, f"{got} within 10 s"
        for m in (a, b):
            s = m.receive(timeout=0.05)
            if s is not None:
                with s:
                    got[id(m)].append((s.partition, bytes(s.key)))
    for m in (a, b):
        assert {p for p, _ in got[id(m)]} <= set(m.owned_partitions)
        # A key's messages in its partition: the one it hashes to.
        assert all(p == shmbus.partition_for_key(k, parts) for p, k in got[id(m)])
    assert sorted(k for ms in got.values() for _, k in ms) == sorted(keys)

    # b leaves: its partitions go back to a once a receives.
    b.close()
    assert wait_until(lambda: (a.receive(timeout=0.05), a.owned_partitions)[1] ==
                      list(range(parts)), 10, step=0), a.owned_partitions


def test_group_mode_errors(bus):
    bus.create_topic("t", slots=8, slot_size=32, partitions=2)
    with pytest.raises(shmbus.InvalidArgument, match=r"mode='bogus': expected shared or partitioned"):
        bus.subscriber("t", group="g", mode="bogus")
    with pytest.raises(shmbus.InvalidArgument, match=r"mode='partitioned' needs a group name"):
        bus.subscriber("t", mode="partitioned")
    shared = bus.subscriber("t", group="g")
    assert shared.mode == "shared" and shared.owned_partitions == [0, 1]
    with pytest.raises(shmbus.InvalidArgument,
                       match=r"group 'g' of topic 't' is shared .*join it with mode='shared'"):
        bus.subscriber("t", group="g", mode="partitioned")
    bus.subscriber("t", group="p", mode="PARTITIONED").close()  # names are case-insensitive
    with pytest.raises(shmbus.InvalidArgument, match=r"is partitioned"):
        bus.subscriber("t", group="p")


# ---- bad topic options -----------------------------------------------------------


@pytest.mark.parametrize("kw, message", [
    (dict(partitions=0), r"partitions=0: a topic has 1 to 1024 partitions"),
    (dict(partitions=1025), r"partitions=1025: a topic has 1 to 1024 partitions"),
    (dict(partitions=-3), r"partitions=-3"),
    (dict(priorities=1), r"priorities=1: expected 0 \(no priority lanes\) or 2 to 32"),
    (dict(priorities=33), r"priorities=33"),
    (dict(partitions=4, priorities=2), r"either partitions or priority lanes, not both"),
])
def test_bad_topic_options(bus, kw, message):
    with pytest.raises(shmbus.InvalidArgument, match=message):
        bus.create_topic("bad", **kw)
    with pytest.raises(shmbus.NotFound):
        bus.describe("bad")  # nothing was made


def test_partition_out_of_range(bus):
    bus.create_topic("t", slots=8, slot_size=32, partitions=4)
    bus.create_topic("one", slots=8, slot_size=32)
    pub = bus.publisher("t")
    with pytest.raises(shmbus.InvalidArgument, match=r"partition=4: topic 't' has 4 partitions, 0 to 3"):
        pub.publish(b"x", partition=4)
    with pytest.raises(shmbus.InvalidArgument, match=r"partition=4"):
        pub.loan(1, partition=4)
    with pytest.raises(shmbus.InvalidArgument, match=r"partition=True: expected None or an int"):
        pub.publish(b"x", partition=True)
    with pytest.raises(shmbus.InvalidArgument, match=r"has one partition \(0\); create it with "
                                                     r"partitions=N"):
        bus.publisher("one").publish(b"x", partition=1)
    assert bus.describe("t").tail == 0  # nothing was published
