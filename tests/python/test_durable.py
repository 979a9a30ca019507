"""File topics from Python (issue 17): create_topic(..., storage="file",
flush=...), Publisher.flush(), Bus.flush(topic), what describe() says, and a
topic that outlives its daemon (stopped, then a new one autospawned with the
same SHMBUS_DATA_DIR)."""

import os

import pytest

import shmbus
from conftest import process_gone, spawn_daemon, wait_until


def test_a_file_topic_is_flushed_and_outlives_its_daemon(busenv):
    bus = busenv.bus
    data_dir = os.path.join(busenv.dir, "data")
    bus.create_topic("ledger", slots=256, slot_size=64, storage="file", flush="interval:50ms")
    st = bus.describe("ledger")
    assert st.storage == "file"
    assert st.flush == "interval:50ms"
    assert st.path == os.path.join(data_dir, "ledger")
    assert os.path.isfile(st.path) and os.path.isfile(st.path + "@control")
    assert os.stat(data_dir).st_mode & 0o777 == 0o700
    sub = bus.subscriber("ledger", group="books", durable=True, start="earliest")
    del sub
    pub = bus.publisher("ledger")
    for i in range(100):
        pub.publish(b"entry-%d" % i)
    pub.flush()
    bus.flush("ledger")
    assert bus.describe("ledger").flushed_ns is not None
    assert bus.describe("ledger").as_dict()["storage"] == "file"
    pub.close()

    # The daemon goes; a new one (autospawned, same environment) finds it.
    old_pid = bus.daemon_pid
    bus.shutdown_daemon()
    assert wait_until(lambda: process_gone(old_pid), 10)
    again = spawn_daemon(busenv.name, busenv.socket, data_dir)
    new_pid = again.daemon_pid
    try:
        assert new_pid != old_pid
        st = again.describe("ledger")
        assert st.published == 100
        assert st.storage == "file"
        sub = again.subscriber("ledger", group="books")
        for i in range(100):
            with sub.receive(timeout=30) as s:
                assert s is not None
                assert bytes(s) == b"entry-%d" % i
        sub.close()
    finally:
        again.shutdown_daemon()
        assert wait_until(lambda: process_gone(new_pid), 10)


def test_bad_storage_arguments(bus):
    with pytest.raises(shmbus.InvalidArgument, match="memory or file"):
        bus.create_topic("a", storage="disk")
    with pytest.raises(shmbus.InvalidArgument, match="interval"):
        bus.create_topic("b", storage="file", flush="often")
    with pytest.raises(shmbus.InvalidArgument, match="file topics"):
        bus.create_topic("c", flush="interval:10ms")
    bus.create_topic("m", slots=16, slot_size=64)
    assert bus.describe("m").storage == "memory"
    assert bus.describe("m").path is None
    bus.flush("m")  # nothing to do for a memory topic
