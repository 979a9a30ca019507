"""Issue 18 from Python: listen(), select(), fileno(), asyncio, and the batch
calls (publish_batch, receive_into) between processes, checksummed."""

import asyncio
import selectors
import sys
import threading
import time

import numpy as np
import pytest

import shmbus
from _worker import batch_rows
from conftest import read_line, stop_process, wait_until


def check_rows(rows, first):
    """True when `rows` are rows first.. of the checksummed stream."""
    return np.array_equal(rows, batch_rows(np, first, len(rows)))


@pytest.mark.parametrize("form,count", [("array", 1_000_000), ("list", 100_000)])
def test_batch_round_trip_between_processes_is_checksummed(busenv, form, count):
    busenv.bus.create_topic("bulk", slots=8192, slot_size=64)
    sub = busenv.bus.subscriber("bulk", start="earliest")
    child = busenv.worker("batch-publish", "bulk", count, form)
    out = np.zeros((4096, 64), dtype=np.uint8)
    sizes = np.zeros(4096, dtype=np.uint32)
    got = 0
    while got < count:
        n = sub.receive_into(out, timeout=30, sizes=sizes)
        assert n > 0, f"nothing for 30 s after {got}"
        assert check_rows(out[:n], got), f"a row of {got}..{got + n} is wrong"
        assert (sizes[:n] == 64).all()
        got += n
    assert got == count
    assert read_line(child, 30).startswith("done")
    assert stop_process(child) == 0
    assert sub.receive_into(out, timeout=0) == 0


def test_batch_calls_refuse_what_they_cannot_take(bus):
    bus.create_topic("t", slots=16, slot_size=64)
    pub = bus.publisher("t", timeout=0.05)
    sub = bus.subscriber("t", start="earliest")
    with pytest.raises(shmbus.TooLarge):
        pub.publish_batch([b"ok", b"x" * 65])
    assert sub.receive(timeout=0) is None  # nothing of the batch was published
    with pytest.raises(TypeError):
        pub.publish_batch(b"one message")
    with pytest.raises(TypeError):
        pub.publish_batch(np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(TypeError):
        pub.publish_batch(7)
    # A full ring: the count says how many went in, the rest did not.
    assert pub.publish_batch([b"m"] * 20) == 16
    assert pub.try_publish_batch([b"m"]) == 0
    with pytest.raises(shmbus.TooLarge):
        sub.receive_into(np.zeros((4, 32), dtype=np.uint8))
    with pytest.raises(ValueError):
        sub.receive_into(np.zeros((4, 64), dtype=np.uint8), sizes=np.zeros(2, dtype=np.uint32))
    with pytest.raises(TypeError):
        sub.receive_into(b"read-only" * 8)
    assert sub.receive_into(np.zeros((32, 64), dtype=np.uint8), timeout=1) == 16


def test_listen_handles_every_message_once_and_by_key_in_order(bus):
    bus.create_topic("jobs", slots=256, slot_size=64, partitions=4)
    sub = bus.subscriber("jobs", start="earliest")
    pub = bus.publisher("jobs")
    seen, order_ok, lock = {}, [True], threading.Lock()
    last = {}

    def handle(m):
        key, i = m.key.decode(), int(m.data)
        with lock:
            seen[i] = seen.get(i, 0) + 1
            if last.get(key, -1) >= i:
                order_ok[0] = False
            last[key] = i

    count = 5000
    with sub.listen(handle, threads=3, ordered_by_key=True) as listener:
        assert listener.running
        with pytest.raises(shmbus.Error, match="listening"):
            sub.receive(timeout=0)
        for i in range(count):
            pub.publish(b"%d" % i, key="k%d" % (i % 7))
        assert wait_until(lambda: listener.handled == count, 30), listener.handled
    assert not listener.running and listener.failed == 0
    assert sorted(seen) == list(range(count)) and set(seen.values()) == {1}
    assert order_ok[0]
    assert sub.receive(timeout=0) is None  # the subscriber is the caller's again


def test_a_raising_callback_is_counted_and_nacked_under_at_least_once(bus):
    bus.create_topic("flaky", slots=64, slot_size=64)
    sub = bus.subscriber("flaky", group="w", start="earliest", delivery="at_least_once")
    pub = bus.publisher("flaky")
    calls = []

    def handle(m):
        calls.append((int(m.data), m.delivery_count))
        if m.delivery_count == 1 and int(m.data) % 2 == 0:
            raise RuntimeError("first try fails")

    errors = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: errors.append(u.exc_value)
    try:
        with sub.listen(handle, threads=2) as listener:
            for i in range(10):
                pub.publish(b"%d" % i)
            assert wait_until(lambda: listener.handled == 10, 30)
        assert listener.failed == 5
    finally:
        sys.unraisablehook = hook
    assert len(errors) == 5 and all(isinstance(e, RuntimeError) for e in errors)
    assert sorted(i for i, d in calls if d == 2) == [0, 2, 4, 6, 8]


def test_select_and_fileno(bus):
    for t in ("a", "b", "c"):
        bus.create_topic(t, slots=16, slot_size=64)
    subs = [bus.subscriber(t) for t in ("a", "b", "c")]
    pub = bus.publisher("b")
    start = time.monotonic()
    assert shmbus.select(subs, 0.2) == []
    assert time.monotonic() - start >= 0.2
    pub.publish(b"x")
    assert shmbus.select(subs, 5) == [subs[1]]
    # The descriptor: selectors take the subscriber itself.
    sel = selectors.DefaultSelector()
    for s in subs:
        sel.register(s, selectors.EVENT_READ)
    ready = [key.fileobj for key, _ in sel.select(5)]
    assert ready == [subs[1]]
    assert subs[1].receive(timeout=0) is not None
    assert subs[1].receive(timeout=0) is None  # re-arms: quiet now
    assert sel.select(0.05) == []
    # A publish from another thread while select() sleeps wakes it.
    threading.Timer(0.05, lambda: pub.publish(b"y")).start()
    assert shmbus.select(subs, 10) == [subs[1]]
    sel.close()
    with pytest.raises(ValueError):
        shmbus.select(subs, -1)


def test_asyncio_three_topics_three_tasks_and_the_loop_stays_free(bus):
    names = ("x", "y", "z")
    for t in names:
        bus.create_topic(t, slots=64, slot_size=64)
    subs = {t: bus.subscriber(t) for t in names}
    pubs = {t: bus.publisher(t) for t in names}
    count = 200

    async def reader(t):
        got = []
        async for s in subs[t]:
            got.append(int(bytes(s)))
            if len(got) == count:
                return got

    async def writer():
        for i in range(count):
            for t in names:
                await pubs[t].publish_async(b"%d" % i)
            await asyncio.sleep(0)

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():  # proves the loop is never blocked by the readers
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        tick = asyncio.create_task(ticker())
        readers = [asyncio.create_task(reader(t)) for t in names]
        # With the readers waiting on their descriptors the ticker still runs:
        # were the loop blocked, ticks would stay put and this would time out.
        async def ticked(n):
            while ticks < n:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(ticked(5), 30)
        before = ticks
        await asyncio.wait_for(writer(), 30)
        results = await asyncio.wait_for(asyncio.gather(*readers), 30)
        stop.set()
        await tick
        return results, before

    results, ticks_before = asyncio.run(main())
    assert all(r == list(range(count)) for r in results)
    assert ticks_before >= 5


def test_asyncio_timeouts_and_cancellation_take_nothing(bus):
    bus.create_topic("q", slots=4, slot_size=64)
    sub = bus.subscriber("q")
    pub = bus.publisher("q", timeout=0.2)

    async def main():
        assert await sub.receive_async(timeout=0.05) is None
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sub.receive_async(), 0.05)
        task = asyncio.create_task(sub.receive_async())
        for _ in range(3):
            await asyncio.sleep(0)  # yields: the task reaches its wait on the descriptor
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pub.publish(b"after")  # nobody took it: the cancelled waits left it
        s = await sub.receive_async(timeout=5)
        assert bytes(s) == b"after"
        s.release()
        # publish_async under 'block': waits for room without blocking the loop.
        for i in range(4):
            pub.publish(b"%d" % i)
        with pytest.raises(shmbus.Timeout):
            await pub.publish_async(b"no room", timeout=0.05)
        send = asyncio.create_task(pub.publish_async(b"room", timeout=10))
        for _ in range(3):
            await asyncio.sleep(0)  # it runs, finds no room, waits
        assert not send.done()
        assert bytes(await sub.receive_async(timeout=5)) == b"0"
        await asyncio.wait_for(send, 10)
        cancelled = asyncio.create_task(pub.publish_async(b"never", timeout=10))
        for _ in range(3):
            await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        rest = []
        while (s := sub.receive(timeout=0)) is not None:
            rest.append(bytes(s))
            s.release()
        return rest

    assert asyncio.run(main()) == [b"1", b"2", b"3", b"room"]
