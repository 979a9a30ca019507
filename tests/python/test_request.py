"""Request-reply from Python (issue 16): bus.request(topic, data, timeout=),
sample.reply(data), the errors, and the CLI's `shmbus request`."""

import subprocess
import threading

import pytest

import shmbus
from conftest import BUILD


def serve(busenv, topic, count, ready):
    """A responder thread: answers `count` requests with b"re:" + request."""
    bus = busenv.connect()
    sub = bus.subscriber(topic, group="svc", start="earliest")
    ready.set()
    for _ in range(count):
        with sub.receive(timeout=10) as s:
            assert s.reply(b"re:" + bytes(s)) is True


def test_request_gets_its_reply(busenv):
    bus = busenv.bus
    bus.create_topic("svc", slots=64, slot_size=256)
    ready = threading.Event()
    t = threading.Thread(target=serve, args=(busenv, "svc", 3, ready))
    t.start()
    assert ready.wait(10)
    requester = busenv.connect()
    for i in range(3):
        assert requester.request("svc", f"q{i}".encode(), timeout=10) == f"re:q{i}".encode()
    t.join(10)
    assert [x.name for x in bus.topics() if x.name.startswith("_reply.")]
    del requester  # its reply topic goes with it
    assert not [x.name for x in bus.topics() if x.name.startswith("_reply.")]


def test_timeout_and_not_a_request(bus):
    bus.create_topic("svc", slots=64, slot_size=256)
    sub = bus.subscriber("svc", group="svc", start="earliest")
    with pytest.raises(shmbus.Timeout, match="no reply within"):
        bus.request("svc", b"nobody", timeout=0.05)
    with sub.receive(timeout=10) as s:
        assert len(s.headers["correlation_id"]) == 32  # random, 128 bits in hex
        assert s.headers["reply_to"].startswith("_reply.")
        assert s.reply(b"late") is True
    assert sub.replies_dropped == 0
    bus.publisher("svc").publish(b"plain")
    with sub.receive(timeout=10) as s:
        with pytest.raises(shmbus.InvalidArgument, match="no request"):
            s.reply(b"x")
    with pytest.raises(shmbus.InvalidArgument, match="timeout"):
        bus.request("svc", b"x", timeout=-1)


def test_cli_request(busenv):
    busenv.bus.create_topic("svc", slots=64, slot_size=256)
    ready = threading.Event()
    t = threading.Thread(target=serve, args=(busenv, "svc", 1, ready))
    t.start()
    assert ready.wait(10)
    cli = [str(BUILD / "cli" / "shmbus"), "--bus", busenv.name, "--socket", busenv.socket,
           "--no-autospawn"]
    out = subprocess.run(cli + ["request", "svc", "hello", "--timeout", "10"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "re:hello\n"
    t.join(10)
    out = subprocess.run(cli + ["request", "svc", "nobody", "--timeout", "0.1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "no reply from topic 'svc' within 0.1s" in out.stderr
