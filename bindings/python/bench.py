#!/usr/bin/env python3
"""Benchmarks of the shmbus Python module, between two Python processes.

  throughput  64 B messages: publish() in one process, receive() in another,
              as fast as they go (policy 'block', nothing lost).
  batch       the same 64 B stream with the batch calls: publish_batch of a
              (4096, 64) NumPy array in one process, receive_into a (4096, 64)
              array in another; beside it, in the same run, the C++ library's
              own two-process receive loop (bench/shmbus-wakeup-bench).
  asyncio     one-way latency of 64 B to `await sub.receive_async()` on an
              asyncio loop (paced, so it always finds the loop asleep).
  latency     one-way latency of 64 B and 1 MiB NumPy arrays: the producer
              fills each array in place through a loan and publishes it; the
              consumer receives it, views it with np.frombuffer (zero copy) and
              reads its first and last element. Latency = that moment minus
              the publish timestamp (both CLOCK_MONOTONIC). Messages are paced
              (one per --interval) so every one finds the consumer waiting.

Runs against a bus and daemon of its own (autospawned from the build tree, or
$SHMBUS_DAEMON), stopped at the end. Usage (after the release build):

    PYTHONPATH=build/release/bindings/python /usr/bin/python3 bindings/python/bench.py
"""

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
import uuid

import sys

# This script's directory holds the package *sources*; the built package is
# in <build>/bindings/python (PYTHONPATH). Keep the sources out of the way.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import numpy as np  # noqa: E402

import shmbus  # noqa: E402


def _consumer_throughput(bus_name, socket, topic, n, ready, out):
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    sub = bus.subscriber(topic)
    ready.set()
    s = sub.receive(timeout=30)
    t0 = time.perf_counter()
    for _ in range(n - 1):
        s = sub.receive(timeout=30)
        if s is None:
            out.put(("error", "receive timed out"))
            return
    out.put(("ok", (n - 1) / (time.perf_counter() - t0), sub.lost))


def _producer_throughput(bus_name, socket, topic, n, go, out):
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    pub = bus.publisher(topic, timeout=30)
    msg = bytes(64)
    publish = pub.publish
    go.wait(30)
    t0 = time.perf_counter()
    for _ in range(n):
        publish(msg)
    out.put(("ok", n / (time.perf_counter() - t0)))


def _consumer_latency(bus_name, socket, topic, n, wait, ready, out):
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    sub = bus.subscriber(topic, wait=wait)
    ready.set()
    lat = []
    for _ in range(n):
        s = sub.receive(timeout=30)
        if s is None:
            out.put(("error", "receive timed out"))
            return
        a = np.frombuffer(s, dtype=np.float64)
        first, last = a[0], a[-1]
        now = time.monotonic_ns()
        if first != last:
            out.put(("error", f"torn message {s.sequence}"))
            return
        lat.append(now - s.timestamp_ns)
        del a
        s.release()
    out.put(("ok", lat))


def _producer_latency(bus_name, socket, topic, size, n, interval, go, out):
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    pub = bus.publisher(topic, timeout=30)
    go.wait(30)
    next_at = time.perf_counter()
    for k in range(n):
        with pub.loan(size) as buf:
            np.frombuffer(buf, dtype=np.float64)[:] = k  # written in place
        next_at += interval
        while time.perf_counter() < next_at:
            pass
    out.put(("ok", None))


def _consumer_batch(bus_name, socket, topic, n, ready, out):
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    sub = bus.subscriber(topic)
    buf = np.zeros((4096, 64), dtype=np.uint8)
    ready.set()
    got = sub.receive_into(buf, timeout=30)
    t0 = time.perf_counter()
    while got < n:
        k = sub.receive_into(buf, timeout=30)
        if k == 0:
            out.put(("error", "receive_into timed out"))
            return
        got += k
    out.put(("ok", (got - 1) / (time.perf_counter() - t0)))


def _producer_batch(bus_name, socket, topic, n, go, out):
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    pub = bus.publisher(topic, timeout=30)
    rows = np.zeros((4096, 64), dtype=np.uint8)
    go.wait(30)
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        k = min(len(rows), n - sent)
        sent += pub.publish_batch(rows[:k])
    out.put(("ok", n / (time.perf_counter() - t0)))


def _consumer_async(bus_name, socket, topic, n, ready, out):
    import asyncio

    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    sub = bus.subscriber(topic)

    async def main():
        lat = []
        ready.set()
        while len(lat) < n:
            s = await sub.receive_async(timeout=30)
            if s is None:
                return None
            lat.append(time.monotonic_ns() - s.timestamp_ns)
            s.release()
        return lat

    lat = asyncio.run(main())
    out.put(("ok", lat) if lat is not None else ("error", "receive_async timed out"))


def _cxx_throughput(n):
    """The C++ receive loop's two-process rate, from bench/shmbus-wakeup-bench."""
    import subprocess

    exe = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(shmbus.__file__)))), "..", "bench", "shmbus-wakeup-bench")
    exe = os.path.normpath(exe)
    if not os.access(exe, os.X_OK):
        return None
    line = subprocess.run([exe, "--throughput", str(n)], capture_output=True, text=True,
                          timeout=300).stdout
    return float(line.split(":")[1].split()[0]) * 1e6


def _run_pair(consumer, cargs, producer, pargs):
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    cq, pq = ctx.Queue(), ctx.Queue()
    c = ctx.Process(target=consumer, args=(*cargs, ready, cq))
    p = ctx.Process(target=producer, args=(*pargs, go, pq))
    c.start()
    p.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("consumer did not start")
        go.set()
        cres = cq.get(timeout=300)
        pres = pq.get(timeout=300)
        for r in (cres, pres):
            if r[0] != "ok":
                raise RuntimeError(r[1])
        return cres[1:], pres[1:]
    finally:
        for proc in (c, p):
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000, help="throughput messages")
    ap.add_argument("--batch-messages", type=int, default=20_000_000,
                    help="batch throughput messages")
    ap.add_argument("--samples", type=int, default=3000, help="latency messages per size")
    ap.add_argument("--interval", type=float, default=0.0005, help="latency pacing, seconds")
    ap.add_argument("--wait", default="futex", help="consumer wait: futex (default) or busy")
    args = ap.parse_args()

    directory = tempfile.mkdtemp(prefix="shmbus-bench-")
    name = f"bench{os.getpid()}-{uuid.uuid4().hex[:6]}"
    socket = os.path.join(directory, "bus.sock")
    # Start the daemon, then use connections that never autospawn (so none
    # restarts it while it shuts down at the end).
    boot = shmbus.connect(name, socket=socket)
    del boot
    bus = shmbus.connect(name, socket=socket, autospawn=False)
    try:
        print(f"shmbus Python benchmarks ({os.cpu_count()} CPUs, numpy {np.__version__})")
        bus.create_topic("tp", slots=4096, slot_size=64)
        (rate, lost), (prate,) = _run_pair(
            _consumer_throughput, (name, socket, "tp", args.messages),
            _producer_throughput, (name, socket, "tp", args.messages))
        print(f"throughput 64 B, 2 processes: {rate / 1e6:.2f} M msg/s received "
              f"({prate / 1e6:.2f} M/s published, {args.messages} messages, lost {lost})")

        bus.create_topic("tb", slots=16384, slot_size=64)
        (brate,), (bprate,) = _run_pair(
            _consumer_batch, (name, socket, "tb", args.batch_messages),
            _producer_batch, (name, socket, "tb", args.batch_messages))
        cxx = _cxx_throughput(args.batch_messages)
        print(f"batch 64 B (publish_batch / receive_into of (4096, 64) arrays), 2 processes: "
              f"{brate / 1e6:.2f} M msg/s received ({bprate / 1e6:.2f} M/s published, "
              f"{args.batch_messages} messages); {brate / rate:.1f}x the per-message calls")
        if cxx:
            print(f"C++ receive loop, 2 processes, same run: {cxx / 1e6:.2f} M msg/s; "
                  f"Python batch / C++ = {brate / cxx:.2f}")

        bus.create_topic("la", slots=8, slot_size=64)
        warm = 200
        (alat,), _ = _run_pair(
            _consumer_async, (name, socket, "la", args.samples + warm),
            _producer_latency, (name, socket, "la", 64, args.samples + warm, args.interval))
        alat = [x / 1000 for x in alat[warm:]]
        print(f"one-way latency   64 B to await receive_async() on asyncio: median "
              f"{statistics.median(alat):7.1f} us  p90 {_pct(alat, 0.90):7.1f}  "
              f"p99 {_pct(alat, 0.99):7.1f}")

        results = {}
        for size, label in ((64, "64 B"), (1 << 20, "1 MiB")):
            topic = f"lat{size}"
            bus.create_topic(topic, slots=8, slot_size=size)
            warm = 200
            (lat,), _ = _run_pair(
                _consumer_latency, (name, socket, topic, args.samples + warm, args.wait),
                _producer_latency, (name, socket, topic, size, args.samples + warm,
                                    args.interval))
            lat = [x / 1000 for x in lat[warm:]]  # microseconds
            results[label] = statistics.median(lat)
            print(f"one-way latency {label:>6} (loan -> receive -> np.frombuffer, wait="
                  f"{args.wait}): median {statistics.median(lat):7.1f} us  "
                  f"p90 {_pct(lat, 0.90):7.1f}  p99 {_pct(lat, 0.99):7.1f}  "
                  f"min {min(lat):6.1f}")
        ratio = results["1 MiB"] / results["64 B"]
        print(f"1 MiB / 64 B median latency: {ratio:.2f}x (zero copy: size does not matter)")
    finally:
        bus.shutdown_daemon()
        for f in os.listdir("/dev/shm"):
            if f.startswith(f"shmbus.{name}."):
                os.unlink(os.path.join("/dev/shm", f))
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
