"""shmbus.partition_for_key: Kafka's default partitioner, checked against
librdkafka itself (loaded with ctypes: Debian's librdkafka1, which
scripts/deps.sh installs with librdkafka-dev)."""
import ctypes
import ctypes.util
import random

import pytest

import shmbus


def _librdkafka():
    name = ctypes.util.find_library("rdkafka") or "librdkafka.so.1"
    lib = ctypes.CDLL(name)
    f = lib.rd_kafka_msg_partitioner_murmur2
    f.restype = ctypes.c_int32
    f.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int32,
                  ctypes.c_void_p, ctypes.c_void_p]
    return f


def test_agrees_with_librdkafka_for_bytes_and_str_keys():
    kafka = _librdkafka()
    rng = random.Random(7)  # the same keys on every run
    for _ in range(5000):
        key = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        n = rng.randrange(1, 300)
        # A non-empty buffer behind an empty key: librdkafka hashes it (a NULL
        # key would pick a random partition).
        buf = ctypes.create_string_buffer(key, max(len(key), 1))
        assert shmbus.partition_for_key(key, n) == kafka(None, buf, len(key), n, None, None)
    for text in ["user-7", "order:12345", "ключ", ""]:
        raw = text.encode()
        assert shmbus.partition_for_key(text, 16) == shmbus.partition_for_key(raw, 16)
        assert shmbus.partition_for_key(bytearray(raw), 16) == shmbus.partition_for_key(raw, 16)
        assert shmbus.partition_for_key(memoryview(raw), 16) == shmbus.partition_for_key(raw, 16)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(shmbus.InvalidArgument, match="at least one partition"):
        shmbus.partition_for_key(b"k", 0)
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError too
        shmbus.partition_for_key(b"k", -3)
    with pytest.raises(TypeError, match="partition_for_key needs a key of bytes"):
        shmbus.partition_for_key(12, 4)
