"""Subscriber.receive_batch (zero-copy batches, one release) and receive_copy
(into a caller's buffer), and errors that name the Python spelling."""

import ctypes
import threading

import pytest

import shmbus


@pytest.fixture
def topic(bus):
    bus.create_topic("t", slots=8, slot_size=64)
    return "t"


def test_batch_holds_consecutive_messages_in_order(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    for i in range(5):
        pub.publish(b"m%d" % i)
    batch = sub.receive_batch(3, timeout=5)
    assert isinstance(batch, shmbus.Batch)
    assert len(batch) == 3 and batch.first_sequence == 0 and batch.intact
    assert sub.holding == 1  # one hold for the whole batch
    assert [item.sequence for item in batch] == [0, 1, 2]
    assert [bytes(item) for item in batch] == [b"m0", b"m1", b"m2"]
    assert batch[-1].tobytes() == b"m2" and len(batch[1]) == batch[1].size == 2
    assert all(item.producer_id == pub.id and item.timestamp_ns > 0 for item in batch)
    assert batch[0].batch is batch
    with pytest.raises(IndexError):
        batch[3]
    with pytest.raises(IndexError):
        batch[-4]
    assert batch.release() is True and batch.released and sub.holding == 0
    with pytest.raises(shmbus.Closed):
        bytes(batch[0])
    with pytest.raises(shmbus.Closed):
        batch.intact
    assert batch[0].sequence == 0  # metadata stays readable
    assert batch.release() is True  # idempotent
    with sub.receive_batch(10, timeout=5) as rest:  # only what is ready
        assert [bytes(item) for item in rest] == [b"m3", b"m4"]
    assert rest.released and sub.holding == 0
    assert sub.receive_batch(10, timeout=0) is None
    assert sub.receive_batch(10, timeout=0.01) is None


def test_one_release_frees_every_slot(bus):
    bus.create_topic("full", slots=4, slot_size=16, policy="block")
    sub = bus.subscriber("full")
    pub = bus.publisher("full", timeout=0.2)
    for i in range(4):
        pub.publish(bytes([i]))
    batch = sub.receive_batch(4, timeout=5)
    assert len(batch) == 4 and sub.holding == 1
    assert not pub.try_publish(b"x")  # the batch holds the whole ring
    batch.release()
    assert sub.holding == 0
    assert all(pub.try_publish(bytes([i])) for i in range(4))
    assert not pub.try_publish(b"x")


def test_dropping_the_batch_releases_it(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    pub.publish(b"a")
    pub.publish(b"b")
    item = sub.receive_batch(2, timeout=5)[1]  # the item keeps its batch alive
    assert sub.holding == 1 and bytes(item) == b"b"
    del item
    assert sub.holding == 0


def test_view_from_an_item_keeps_the_slots_held(bus):
    bus.create_topic("d", slots=2, slot_size=16, policy="block")
    sub = bus.subscriber("d")
    pub = bus.publisher("d", timeout=0.2)
    pub.publish(b"first")
    pub.publish(b"second")
    batch = sub.receive_batch(2, timeout=5)
    view = memoryview(batch[1])
    assert batch.exports == 1 and view.readonly
    with pytest.raises((BufferError, TypeError)):
        ctypes.c_char.from_buffer(batch[0])  # asks for a writable buffer
    assert batch.release() is False  # deferred: `view` still sees slot 1
    assert batch.released and sub.holding == 1
    with pytest.raises(shmbus.Closed):
        memoryview(batch[0])  # no new access
    assert not pub.try_publish(b"x")  # both slots stay held
    assert view.tobytes() == b"second"
    view.release()
    assert batch.exports == 0 and sub.holding == 0
    assert pub.try_publish(b"x") and pub.try_publish(b"y")


def test_with_block_defers_while_arrays_live(bus, topic):
    np = pytest.importorskip("numpy")
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    pub.publish(np.arange(4, dtype=np.int32))
    with sub.receive_batch(1, timeout=5) as batch:
        a = np.frombuffer(batch[0], dtype=np.int32)
    assert batch.released and sub.holding == 1
    np.testing.assert_array_equal(a, np.arange(4))
    del a
    assert sub.holding == 0


def test_batch_too_many_held_and_bad_max(bus):
    bus.create_topic("h", slots=128, slot_size=16)
    sub = bus.subscriber("h")
    pub = bus.publisher("h")
    for i in range(70):
        pub.publish(bytes([i]))
    held = [sub.receive(timeout=5) for _ in range(63)]
    batch = sub.receive_batch(2, timeout=5)  # the 64th hold
    assert len(batch) == 2 and sub.holding == 64
    with pytest.raises(shmbus.TooManyHeld, match="holds 64 samples not yet released"):
        sub.receive_batch(2, timeout=5)
    with pytest.raises(shmbus.TooManyHeld):
        sub.receive(timeout=5)
    batch.release()
    assert bytes(sub.receive_batch(1, timeout=5)[0]) == bytes([65])
    for bad in (0, -1):
        with pytest.raises(shmbus.InvalidArgument, match=r"^max=.*expected an int >= 1"):
            sub.receive_batch(bad)
    assert len(held) == 63


def test_batch_waits_for_a_message(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    got = []
    t = threading.Thread(target=lambda: got.append(sub.receive_batch(4, timeout=10)))
    t.start()
    pub.publish(b"late")
    t.join(timeout=10)
    assert not t.is_alive()
    assert [bytes(item) for item in got[0]] == [b"late"]


def test_closed_after_close_and_close_deferred_by_a_batch(bus, topic):
    sub = bus.subscriber(topic)
    pub = bus.publisher(topic)
    pub.publish(b"kept")
    batch = sub.receive_batch(4, timeout=5)
    sub.close()
    with pytest.raises(shmbus.Closed):
        sub.receive_batch(4, timeout=0)
    with pytest.raises(shmbus.Closed):
        sub.receive_copy(bytearray(64), timeout=0)
    assert bytes(batch[0]) == b"kept"  # still valid after close()
    batch.release()
    assert sub.holding == 0


def test_receive_copy_into_a_bytearray_frees_the_slot(bus):
    bus.create_topic("c", slots=2, slot_size=64, policy="block")
    sub = bus.subscriber("c")
    pub = bus.publisher("c", timeout=0.2)
    pub.publish(b"hello")
    pub.publish(b"world!")
    buf = bytearray(64)
    info = sub.receive_copy(buf, timeout=5)
    assert isinstance(info, shmbus.MessageInfo) and isinstance(info, tuple)
    size, sequence, timestamp_ns, producer_id = info
    assert (size, sequence, producer_id) == (5, 0, pub.id) and timestamp_ns > 0
    assert bytes(buf[:info.size]) == b"hello"
    assert sub.holding == 0 and pub.try_publish(b"again")  # the slot was given back
    view = memoryview(bytearray(80))[8:72]  # a writable, contiguous slice
    assert sub.receive_copy(view, timeout=5).size == 6 and view[:6].tobytes() == b"world!"
    assert sub.receive_copy(buf, timeout=5).sequence == 2
    assert sub.receive_copy(buf, timeout=0) is None
    assert sub.receive_copy(buf, timeout=0.01) is None


def test_receive_copy_into_numpy(bus):
    np = pytest.importorskip("numpy")
    bus.create_topic("n", slots=4, slot_size=64)
    sub = bus.subscriber("n")
    pub = bus.publisher("n")
    pub.publish(np.arange(16, dtype=np.float32))
    out = np.zeros(16, dtype=np.float32)
    assert sub.receive_copy(out, timeout=5).size == 64
    np.testing.assert_array_equal(out, np.arange(16, dtype=np.float32))
    pub.publish(b"x")
    with pytest.raises(TypeError, match="writable C-contiguous"):
        sub.receive_copy(np.zeros(64, dtype=np.uint8)[::2])  # not contiguous
    with pytest.raises(TypeError, match="writable C-contiguous"):
        sub.receive_copy(bytes(64))  # read-only
    assert sub.receive_copy(bytearray(64), timeout=5).size == 1  # still there


def test_receive_copy_too_small_and_large(bus):
    bus.create_topic("s", slots=4, slot_size=1 << 17)
    sub = bus.subscriber("s")
    pub = bus.publisher("s")
    pub.publish(b"\x07" * 100_000)
    with pytest.raises(shmbus.TooLarge,
                       match=r"buffer of 10 bytes is smaller than the slot size 131072") as e:
        sub.receive_copy(bytearray(10), timeout=5)
    assert isinstance(e.value, ValueError)
    buf = bytearray(1 << 17)  # copied with the GIL released
    info = sub.receive_copy(buf, timeout=5)
    assert info.sequence == 0 and info.size == 100_000  # the message was not consumed
    assert buf[:100_000] == b"\x07" * 100_000 and buf[100_000] == 0


def test_errors_name_the_python_spelling(busenv, tmp_path, monkeypatch):
    monkeypatch.delenv("SHMBUS_NO_AUTOSPAWN", raising=False)
    missing = tmp_path / "no-such-shmbusd"
    with pytest.raises(shmbus.DaemonUnavailable,
                       match=r"no shmbusd executable found.*shmbus\.connect\(daemon=\.\.\.\)") as e:
        shmbus.connect(busenv.name, socket=str(tmp_path / "none.sock"), daemon=str(missing),
                       timeout=1.0)
    assert "BusOptions" not in str(e.value) and "::" not in str(e.value)
    with pytest.raises(shmbus.InvalidArgument, match=r"slots=3 is not a power of two") as e:
        busenv.bus.create_topic("odd", slots=3)
    assert "slot_count" not in str(e.value)
