"""C++ <-> Python: 100,000 checksummed messages each way, nothing lost.

The format (tests/python/peer.cpp): u64 index | u32 n | n bytes (index+j)&0xff
| u32 CRC-32 (zlib) of what precedes, with n = index * 7919 % 241.
"""

import os
import struct
import subprocess
import zlib

import pytest

from conftest import PEER, read_line, stop_process

COUNT = int(os.environ.get("SHMBUS_INTEROP_MESSAGES", "100000"))
PATTERN = bytes(range(256)) * 2

pytestmark = pytest.mark.skipif(not PEER.exists(), reason=f"{PEER} not built")


def encode(i):
    n = i * 7919 % 241
    head = struct.pack("<QI", i, n) + PATTERN[i % 256:i % 256 + n]
    return head + struct.pack("<I", zlib.crc32(head))


def check(i, m):
    """None when memoryview `m` is message i, else what is wrong."""
    if len(m) < 16:
        return f"too short ({len(m)})"
    index, n = struct.unpack_from("<QI", m)
    if index != i:
        return f"index {index}, expected {i}"
    if n != i * 7919 % 241 or len(m) != 16 + n:
        return "bad length"
    if struct.unpack_from("<I", m, 12 + n)[0] != zlib.crc32(m[:12 + n]):
        return "bad checksum"
    if m[12:12 + n] != PATTERN[i % 256:i % 256 + n]:
        return "bad payload"
    return None


def test_encoding_matches_itself():
    for i in (0, 1, 255, 256, 99999):
        assert check(i, memoryview(encode(i))) is None


def test_cpp_producer_python_consumer(busenv):
    bus = busenv.bus
    bus.create_topic("interop", slots=1024, slot_size=256)
    sub = bus.subscriber("interop")  # joined before the producer starts: sees everything
    proc = subprocess.Popen([str(PEER), "produce", busenv.socket, busenv.name, "interop",
                             str(COUNT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        errors = []
        for i in range(COUNT):
            s = sub.receive(timeout=20)
            assert s is not None, f"message {i} did not come"
            with s:
                m = memoryview(s)
                why = check(i, m)
                m.release()
            if why:
                errors.append((i, why))
                if len(errors) > 10:
                    break
        assert errors == []
        assert sub.receive(timeout=0.1) is None
        assert sub.lost == 0
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.strip() == f"done {COUNT}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_python_producer_cpp_consumer(busenv):
    bus = busenv.bus
    bus.create_topic("interop", slots=1024, slot_size=256)
    proc = subprocess.Popen([str(PEER), "consume", busenv.socket, busenv.name, "interop",
                             str(COUNT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert read_line(proc, 20) == "ready"
        pub = bus.publisher("interop", timeout=20)
        for i in range(COUNT):
            m = encode(i)
            if i % 2:
                with pub.loan(len(m)) as buf:  # every other one written in place
                    buf[:] = m
            else:
                pub.publish(m)
        assert read_line(proc, 60) == f"ok {COUNT} lost 0"
        assert stop_process(proc, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
