"""Message properties (Kafka's headers) from Python (issue 16, first step):
publish(..., headers={...}) and loans, Sample.headers and BatchSample.headers,
the limits, and their interplay with keys and NumPy-aligned payloads."""

import pytest

import shmbus


def test_headers_round_trip_with_key(bus):
    bus.create_topic("t", slots=16, slot_size=256, partitions=4)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    pub.publish(b"payload", key="user-7", headers={"tag": "TagA", "trace": "é-1", "e": ""})
    pub.publish(b"plain")
    s = sub.receive(timeout=10)
    with s:
        assert bytes(s) == b"payload"
        assert bytes(s.key) == b"user-7"
        assert s.headers == {"tag": "TagA", "trace": "é-1", "e": ""}
        assert s.partition == shmbus.partition_for_key(b"user-7", 4)
    s = sub.receive(timeout=10)
    with s:
        assert bytes(s) == b"plain" and s.headers == {} and s.key is None
    with pytest.raises(shmbus.Closed):
        s.headers


def test_headers_on_loans_and_batches_keep_the_payload_aligned(bus):
    np = pytest.importorskip("numpy")
    bus.create_topic("t", slots=16, slot_size=256)
    sub = bus.subscriber("t", start="earliest")
    pub = bus.publisher("t")
    for i in range(3):
        with pub.loan(16, headers={"i": str(i), "odd": "x" * (i + 1)}) as buf:
            buf[:] = np.arange(2, dtype=np.uint64).tobytes()
        pub.try_publish(b"12345678", headers={"n": str(i)})
    b = sub.receive_batch(6, timeout=10)
    with b:
        got = [item.headers for item in b]
        for item in b:
            if len(item) == 16:
                arr = np.frombuffer(item, dtype=np.uint64)  # needs 8-byte alignment
                assert list(arr) == [0, 1]
    assert got[0] == {"i": "0", "odd": "x"} and got[1] == {"n": "0"}
    assert got[4] == {"i": "2", "odd": "xxx"}


def test_header_limits_and_types(bus):
    bus.create_topic("t", slots=16, slot_size=2048)
    pub = bus.publisher("t")
    pub.publish(b"x", headers={f"k{i}": "v" for i in range(16)})
    with pytest.raises(shmbus.InvalidArgument, match="at most 16 pairs"):
        pub.publish(b"x", headers={f"k{i}": "v" for i in range(17)})
    with pytest.raises(shmbus.InvalidArgument, match="names of 1 to 255 bytes"):
        pub.publish(b"x", headers={"": "v"})
    with pytest.raises(shmbus.InvalidArgument, match="1024 bytes encoded"):
        pub.publish(b"x", headers={"big": "v" * 1018})
    pub.publish(b"x", headers={"big": "v" * 1017})  # 4 + 3 + 1017: exactly 1024
    with pytest.raises(TypeError, match="dict of str to str"):
        pub.publish(b"x", headers={"k": 1})
    with pytest.raises(TypeError, match="dict of str to str"):
        pub.publish(b"x", headers=[("k", "v")])
    bus.create_topic("small", slots=16, slot_size=64)
    sp = bus.publisher("small")
    with pytest.raises(shmbus.TooLarge, match="6 of headers"):
        sp.publish(b"x" * 60, headers={"k": "v"})
    assert bus.describe("small").tail == 0


def test_tag_filter(bus):
    bus.create_topic("t", slots=16, slot_size=128)
    sub = bus.subscriber("t", group="g", start="earliest", tags="TagA || TagB")
    pub = bus.publisher("t")
    for tag, v in [("TagA", b"1"), ("TagC", b"2"), (None, b"3"), ("TagB", b"4")]:
        pub.publish(v, headers=None if tag is None else {"tag": tag})
    got = []
    while (s := sub.try_receive()) is not None:
        with s:
            got.append(bytes(s))
    assert got == [b"1", b"4"]
    assert sub.filtered == 2 and sub.lost == 0 and sub.lag == 0
    (g,) = [g for g in bus.describe("t").groups if g.name == "g"]
    assert g.filtered == 2 and g.as_dict()["filtered"] == 2
    with pytest.raises(shmbus.InvalidArgument, match="is not TAG"):
        bus.subscriber("t", group="h", tags="TagA ||")
