"""The version and the names Python shares with the C++ library and the CLI."""

import re

import pytest

import shmbus
from conftest import REPO


def project_version():
    text = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*shmbus\s+VERSION\s+(\d+\.\d+\.\d+)", text)
    assert m, "no project(shmbus VERSION x.y.z) in the top-level CMakeLists.txt"
    return m.group(1)


def test_version_is_the_projects():
    assert shmbus._shmbus.__version__ == project_version()
    assert shmbus.__version__ == shmbus._shmbus.__version__


@pytest.mark.parametrize("wait", ["futex", "yield", "busy", "spin_futex", "spin_yield",
                                  "busy_spin"])
def test_every_wait_spelling(bus, wait):
    bus.create_topic("t", slots=4, slot_size=16)
    pub = bus.publisher("t", wait=wait, timeout=1.0)
    sub = bus.subscriber("t", wait=wait)
    pub.publish(b"x")
    with sub.receive(timeout=5) as s:
        assert bytes(s) == b"x"


def test_policy_and_start_names(bus):
    for policy in ("block", "reject", "overwrite"):
        bus.create_topic(policy, policy=policy)
        assert bus.describe(policy).policy == policy
        assert bus.publisher(policy).policy == policy
    pub = bus.publisher("block")
    for i in range(4):
        pub.publish(bytes([i]))
    assert bus.subscriber("block", start="earliest").receive(timeout=5).sequence == 0
    assert bus.subscriber("block", start=2).receive(timeout=5).sequence == 2
    assert bus.subscriber("block", start="latest").try_receive() is None


def test_errors_name_the_keyword(bus):
    bus.create_topic("t")
    with pytest.raises(shmbus.InvalidArgument, match=r"^policy='drop': expected block, reject"):
        bus.create_topic("p", policy="drop")
    with pytest.raises(shmbus.InvalidArgument, match=r"^wait='sometimes': expected busy_spin"):
        bus.publisher("t", wait="sometimes")
    with pytest.raises(shmbus.InvalidArgument, match=r"^start='middle': expected earliest"):
        bus.subscriber("t", start="middle")
    for bad in (-1, True, 1.5, 2**64):
        with pytest.raises(shmbus.InvalidArgument, match=r"^start="):
            bus.subscriber("t", start=bad)
