#!/usr/bin/env python3
"""Benchmarks of the shmbus Python module, between two Python processes.

  throughput  64 B messages: publish() in one process, receive() in another,
              as fast as they go (policy 'block', nothing lost).
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
