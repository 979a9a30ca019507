"""Round trips of bytes and NumPy arrays, loans, zero copy, released samples."""

import array
import ctypes
import threading

import numpy as np
import pytest

import shmbus


def address(buf):
    """Address of the first byte of a buffer-protocol object."""
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data


@pytest.fixture
def topic(bus):
    bus.create_topic("t", slots=8, slot_size=4096)
    return "t"


def test_bytes_like_round_trip(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    payloads = [b"hello", bytearray(b"\x00\x01\x02" * 100), memoryview(b"abcdef")[1:4],
                array.array("i", range(50)), b"", bytes(4096)]
    for p in payloads:
        pub.publish(p)
    for i, p in enumerate(payloads):
        s = sub.receive(timeout=5)
        assert s is not None
        assert s.sequence == i
        assert bytes(s) == bytes(p)
        assert s.tobytes() == bytes(p)
        assert len(s) == s.size == len(bytes(p))
        assert s.timestamp_ns > 0
        assert s.producer_id == pub.id
        assert s.intact
        s.release()
    assert sub.receive(timeout=0) is None


def test_numpy_round_trip(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    arrays = [np.arange(100, dtype=np.float64), np.arange(12, dtype=np.int16).reshape(3, 4),
              np.linspace(0, 1, 1000, dtype=np.float32), np.array([], dtype=np.uint8)]
    for a in arrays:
        pub.publish(a)
    for a in arrays:
        with sub.receive(timeout=5) as s:
            b = np.frombuffer(s, dtype=a.dtype).reshape(a.shape)
            np.testing.assert_array_equal(a, b)
            assert not b.flags.writeable
            del b


def test_large_message_copy(bus):
    bus.create_topic("big", slots=4, slot_size=1 << 20)
    sub = bus.subscriber("big")
    pub = bus.publisher("big")
    a = np.random.default_rng(1).integers(0, 2**31, size=(1 << 20) // 4, dtype=np.int32)
    pub.publish(a)  # >= 64 KiB: copied with the GIL released
    with sub.receive(timeout=5) as s:
        np.testing.assert_array_equal(np.frombuffer(s, dtype=np.int32), a)


def test_non_contiguous_and_too_large_are_refused(bus, topic):
    pub = bus.publisher(topic)
    with pytest.raises(TypeError, match="C-contiguous"):
        pub.publish(np.arange(100).reshape(10, 10)[:, ::2])
    with pytest.raises(TypeError):
        pub.publish(12345)
    with pytest.raises(shmbus.TooLarge) as e:
        pub.publish(bytes(4097))
    assert isinstance(e.value, ValueError)
    with pytest.raises(shmbus.TooLarge):
        pub.loan(4097)


def test_sample_is_zero_copy_and_read_only(bus):
    # Under 'overwrite' a producer reuses a slot even while it is held: an
    # array made from a held sample then shows the new bytes, which proves it
    # views the slot itself.
    bus.create_topic("ow", slots=2, slot_size=64, policy="overwrite")
    sub = bus.subscriber("ow")
    pub = bus.publisher("ow")
    pub.publish(np.full(8, 1, dtype=np.int64))
    s = sub.receive(timeout=5)
    a = np.frombuffer(s, dtype=np.int64)
    assert a[0] == 1 and s.intact
    assert address(s) == a.ctypes.data  # every export points at the same slot
    pub.publish(np.full(8, 2, dtype=np.int64))
    pub.publish(np.full(8, 3, dtype=np.int64))  # sequence 2: slot 0 again
    assert a[0] == 3
    assert not s.intact
    with pytest.raises(ValueError):
        a[0] = 5  # read-only array
    m = memoryview(s)
    assert m.readonly
    with pytest.raises(TypeError):
        m[0] = 1
    with pytest.raises((BufferError, TypeError)):
        ctypes.c_char.from_buffer(s)  # asks for a writable buffer
    del m, a


def test_loan_writes_in_place(bus, topic):
    t = bus.open_topic(topic)  # one mapping for both, so addresses compare
    sub = bus.subscriber(t)
    pub = bus.publisher(t)
    values = np.arange(256, dtype=np.float32) * 0.5
    loan = pub.loan(values.nbytes)
    assert len(loan) == values.nbytes and not loan.done
    with loan as buf:
        assert isinstance(buf, memoryview) and not buf.readonly and len(buf) == values.nbytes
        slot = address(buf)
        np.frombuffer(buf, dtype=np.float32)[:] = values
    assert loan.done
    with sub.receive(timeout=5) as s:
        assert s.sequence == loan.sequence
        got = np.frombuffer(s, dtype=np.float32)
        assert got.ctypes.data == slot  # the consumer reads the very bytes written
        np.testing.assert_array_equal(got, values)
        del got


def test_loan_abandoned_on_exception(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    with pytest.raises(RuntimeError):
        with pub.loan(8) as buf:
            buf[:] = b"abandon!"
            raise RuntimeError("boom")
    pub.publish(b"next")
    s = sub.receive(timeout=5)
    assert bytes(s) == b"next" and s.sequence == 1  # sequence 0 was skipped


def test_loan_partial_publish_abandon_and_drop(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    loan = pub.loan(100)
    memoryview(loan)[:5] = b"short"
    loan.publish(5)
    with pytest.raises(shmbus.Closed):
        loan.publish()
    with pytest.raises(shmbus.Closed):
        memoryview(loan)
    pub.loan(10).abandon()
    pub.loan(10)  # dropped unpublished: abandoned
    pub.publish(b"last")
    assert bytes(sub.receive(timeout=5)) == b"short"
    s = sub.receive(timeout=5)
    assert bytes(s) == b"last" and s.sequence == 3


def test_loan_view_is_released_after_the_block(bus, topic):
    pub = bus.publisher(topic)
    with pub.loan(4) as buf:
        buf[:] = b"abcd"
    with pytest.raises(ValueError):
        buf[0] = 1  # the memoryview was released when the loan was published


def test_released_sample_data_access_raises(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    pub.publish(b"abc")
    s = sub.receive(timeout=5)
    assert s.release() is True
    assert s.released and sub.holding == 0
    with pytest.raises(shmbus.Closed):
        memoryview(s)
    with pytest.raises(shmbus.Closed):
        np.frombuffer(s, dtype=np.uint8)
    with pytest.raises(shmbus.Closed):
        s.tobytes()
    with pytest.raises(shmbus.Closed):
        bytes(s)
    with pytest.raises(shmbus.Closed):
        s.intact
    assert s.release() is True  # idempotent
    assert s.sequence == 0 and s.size == 3  # metadata stays readable

    pub.publish(b"def")
    with sub.receive(timeout=5) as s2:
        pass
    with pytest.raises(shmbus.Closed):
        bytes(s2)


def test_release_is_deferred_while_arrays_live(bus):
    # A 2-slot 'block' ring: a held slot stops the producer, which shows
    # exactly when the slot is given back.
    bus.create_topic("d", slots=2, slot_size=64)
    sub = bus.subscriber("d")
    pub = bus.publisher("d", timeout=0.2)
    pub.publish(np.full(8, 7, dtype=np.int64))
    pub.publish(np.full(8, 8, dtype=np.int64))
    s = sub.receive(timeout=5)
    a = np.frombuffer(s, dtype=np.int64)
    assert s.exports == 1
    assert s.release() is False  # deferred: `a` still views the slot
    assert s.released and sub.holding == 1
    with pytest.raises(shmbus.Closed):
        memoryview(s)  # no new access
    assert sub.receive(timeout=5).sequence == 1  # (released at once: not kept)
    assert not pub.try_publish(b"x")  # slot 0 is still held through `a`
    assert (a == 7).all()  # and still holds message 0
    del a
    assert sub.holding == 0
    assert pub.try_publish(b"x")


def test_sample_context_manager_defers_too(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    pub.publish(np.arange(4, dtype=np.int32))
    with sub.receive(timeout=5) as s:
        a = np.frombuffer(s, dtype=np.int32)
    assert s.released and sub.holding == 1
    np.testing.assert_array_equal(a, np.arange(4))
    del a
    assert sub.holding == 0


def test_too_many_held(bus):
    bus.create_topic("h", slots=128, slot_size=16)
    sub = bus.subscriber("h")
    pub = bus.publisher("h")
    for i in range(70):
        pub.publish(bytes([i]))
    held = [sub.receive(timeout=5) for _ in range(64)]
    with pytest.raises(shmbus.TooManyHeld):
        sub.receive(timeout=5)
    held.pop(0).release()
    assert bytes(sub.receive(timeout=5)) == bytes([64])


def test_iteration(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    for i in range(5):
        pub.publish(bytes([i]))
    got = [bytes(s) for s in sub.iter(timeout=0.2)]
    assert got == [bytes([i]) for i in range(5)]
    pub.publish(b"x")
    pub.publish(b"y")
    # for ever, until break (a watchdog ends it should "y" never come)
    watchdog = threading.Timer(10, lambda: bus.publisher(topic).publish(b"watchdog"))
    watchdog.start()
    try:
        for s in sub:
            assert bytes(s) in (b"x", b"y")
            if bytes(s) == b"y":
                break
    finally:
        watchdog.cancel()


def test_seek_lag_position(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    for i in range(6):
        pub.publish(bytes([i]))
    assert sub.lag == 6 and sub.position == 0
    sub.seek(4)
    assert sub.position == 4 and sub.lag == 2
    assert sub.receive(timeout=5).sequence == 4
    assert sub.lost == 0 and sub.corrupt == 0


def test_overwrite_counts_lost(bus):
    bus.create_topic("ow", slots=4, slot_size=16, policy="overwrite")
    sub = bus.subscriber("ow")
    pub = bus.publisher("ow")
    for i in range(10):
        pub.publish(bytes([i]))
    s = sub.receive(timeout=5)
    assert s.sequence == 6 and sub.lost == 6


def test_start_earliest_and_offset(bus, topic):
    pub = bus.publisher(topic)
    for i in range(5):
        pub.publish(bytes([i]))
    assert bus.subscriber(topic, start="earliest").receive(timeout=5).sequence == 0
    assert bus.subscriber(topic, start=3).receive(timeout=5).sequence == 3
    assert bus.subscriber(topic).receive(timeout=0.05) is None  # latest
    with pytest.raises(shmbus.InvalidArgument):
        bus.subscriber(topic, start="middle")
    with pytest.raises(shmbus.InvalidArgument):
        bus.subscriber(topic, start=-1)


def test_close(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    pub.publish(b"held")
    s = sub.receive(timeout=5)
    sub.close()  # deferred: `s` still holds its slot
    assert sub.closed
    assert bytes(s) == b"held"
    with pytest.raises(shmbus.Closed):
        sub.receive(timeout=0)
    assert bus.describe(topic).groups[0].members == 1
    s.release()
    assert bus.describe(topic).groups == []  # the seat is freed now
    loan = pub.loan(4)
    with pub:
        pass
    assert pub.closed
    with pytest.raises(shmbus.Closed):
        pub.publish(b"x")
    loan.publish()  # the open loan still works; the seat goes with it
    assert bus.describe(topic).producers == 0
    with bus.subscriber(topic) as sub2:
        assert not sub2.closed
    assert sub2.closed


def test_repr_and_help_read_well(bus, topic):
    sub = bus.subscriber(topic, group="g")
    pub = bus.publisher(topic)
    pub.publish(b"r")
    s = sub.receive(timeout=5)
    assert "sequence=0" in repr(s) and "topic='t'" in repr(s)
    assert "group='g'" in repr(sub)
    assert shmbus.Sample.__module__ == "shmbus"
    assert "zero copy" in shmbus.Sample.__doc__
    import pydoc
    text = pydoc.render_doc(shmbus, renderer=pydoc.plaintext)
    for name in ("connect", "Subscriber", "Publisher", "Loan", "Sample", "Timeout"):
        assert name in text


def test_array_outlives_sample_subscriber_and_bus(busenv):
    bus = busenv.connect()
    bus.create_topic("life", slots=4, slot_size=64)
    sub = bus.subscriber("life")
    bus.publisher("life").publish(np.arange(8, dtype=np.int64))
    a = np.frombuffer(sub.receive(timeout=5), dtype=np.int64)
    del sub, bus  # the array keeps the sample, the subscriber and the mapping alive
    import gc
    gc.collect()
    np.testing.assert_array_equal(a, np.arange(8))
    assert busenv.bus.describe("life").groups[0].members == 1
    del a  # now the sample is released and the subscriber closed
    assert busenv.bus.describe("life").groups == []


def test_loan_array_kept_past_the_block(bus, topic):
    # Documented hazard, memory-safe: the array still views the (mapped) slot.
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    loan = pub.loan(16)
    with loan as buf:
        a = np.frombuffer(buf, dtype=np.int64)
        a[:] = 5
    assert loan.done  # published although `a` still exists
    with pytest.raises(shmbus.Closed):
        memoryview(loan)
    with sub.receive(timeout=5) as s:
        assert np.frombuffer(s, dtype=np.int64).tolist() == [5, 5]
    del a, buf
