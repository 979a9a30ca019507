"""Child-process roles for the shmbus Python tests (run by conftest.BusEnv.worker).

    _worker.py <bus> <socket> member <topic> <group>
        joins <group>, prints "ready", receives one message, prints "first"
        and waits for a "go" line on stdin, receives until a STOP message,
        prints the JSON list of indices (u64 little endian at offset 0) it got.
    _worker.py <bus> <socket> block-receive <topic>
        prints "waiting", blocks in receive() with no timeout; on Ctrl-C
        prints "interrupted" and exits 0.
    _worker.py <bus> <socket> block-publish <topic>
        fills the (policy 'block') ring, prints "waiting", blocks in publish()
        with no timeout; on Ctrl-C prints "interrupted" and exits 0.
    _worker.py <bus> <socket> hold-unacked <topic> <group> <n>
        joins <group> (delivery='at_least_once', start earliest), receives
        <n> messages and keeps them unreleased, prints "holding" and sleeps
        until killed.
    _worker.py <bus> <socket> batch-publish <topic> <n> <form>
        publishes <n> checksummed 64-byte messages (u64 index, u64 index *
        0x9E3779B97F4A7C15 mod 2**64, 48 bytes of index & 0xff) with
        publish_batch: rows of NumPy arrays of 4096 (form "array") or lists
        of bytes of 512 (form "list"); prints "done <seconds>".
    _worker.py <bus> <socket> close-in-handler <topic>
        holds a sample, prints "waiting", blocks in receive() with no
        timeout; a SIGUSR1 handler drops the sample and closes the
        subscriber (both need the subscriber's lock, held by the waiting
        receive): prints "closed" when receive raises Closed, exits 0.
"""

import json
import select
import signal
import struct
import sys
import time

import shmbus

STOP = 2**64 - 1


def batch_rows(np, first, count):
    """Rows `first` .. first + count - 1 of the checksummed stream."""
    idx = np.arange(first, first + count, dtype=np.uint64)
    rows = np.empty((count, 64), dtype=np.uint8)
    words = rows.view(np.uint64)
    words[:, 0] = idx
    words[:, 1] = idx * np.uint64(0x9E3779B97F4A7C15)
    rows[:, 16:] = (idx & np.uint64(0xFF)).astype(np.uint8)[:, None]
    return rows


def main():
    bus_name, socket, role, topic = sys.argv[1:5]
    bus = shmbus.connect(bus_name, socket=socket, autospawn=False)
    if role == "member":
        group = sys.argv[5]
        sub = bus.subscriber(topic, group=group)
        print("ready", flush=True)
        got = []
        while True:
            s = sub.receive(timeout=30)
            if s is None:
                print("error: nothing for 30 s", flush=True)
                return 1
            (index,) = struct.unpack_from("<Q", s)
            s.release()
            if index == STOP:
                break
            got.append(index)
            if len(got) == 1:
                # Take no more until the parent says so: its first messages
                # then go one to each member, whatever the scheduling.
                print("first", flush=True)
                ready, _, _ = select.select([sys.stdin], [], [], 60)
                if not ready or sys.stdin.readline().strip() != "go":
                    print("error: no go within 60 s", flush=True)
                    return 1
            time.sleep(0.0002)  # be slow enough that the members really compete
        print(json.dumps(got), flush=True)
        return 0
    if role == "batch-publish":
        import numpy as np
        n, form = int(sys.argv[5]), sys.argv[6]
        pub = bus.publisher(topic, timeout=60)
        chunk = 4096 if form == "array" else 512
        start = time.perf_counter()
        for first in range(0, n, chunk):
            rows = batch_rows(np, first, min(chunk, n - first))
            msgs = rows if form == "array" else [r.tobytes() for r in rows]
            if pub.publish_batch(msgs) != len(rows):
                print("error: publish_batch stopped short", flush=True)
                return 1
        print("done %.6f" % (time.perf_counter() - start), flush=True)
        return 0
    if role == "hold-unacked":
        group, n = sys.argv[5], int(sys.argv[6])
        sub = bus.subscriber(topic, group=group, start="earliest", delivery="at_least_once")
        held = [sub.receive(timeout=30) for _ in range(n)]
        if any(s is None for s in held):
            print("error: nothing for 30 s", flush=True)
            return 1
        print("holding", flush=True)
        signal.pause()  # until the parent's SIGKILL
        return 1
    if role == "block-receive":
        sub = bus.subscriber(topic)
        print("waiting", flush=True)
        try:
            sub.receive()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            return 0
        print("error: receive returned", flush=True)
        return 1
    if role == "block-publish":
        pub = bus.publisher(topic, timeout=None)
        while pub.try_publish(b"x"):
            pass
        print("waiting", flush=True)
        try:
            pub.publish(b"y")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            return 0
        print("error: publish returned", flush=True)
        return 1
    if role == "close-in-handler":
        sub = bus.subscriber(topic, start="earliest")
        held = [sub.receive(timeout=30)]  # the parent published one message

        def on_usr1(signum, frame):
            held.clear()  # the sample's release takes the subscriber's lock
            sub.close()

        signal.signal(signal.SIGUSR1, on_usr1)
        print("waiting", flush=True)
        try:
            sub.receive()
        except shmbus.Closed:
            print("closed", flush=True)
            return 0
        print("error: receive returned", flush=True)
        return 1
    print(f"unknown role {role}", flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
