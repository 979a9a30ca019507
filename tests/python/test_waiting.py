"""Timeouts, full rings, the GIL during waits, Ctrl-C, threads, errors."""

import os
import signal
import threading
import time

import pytest

import shmbus
from conftest import asleep_on_shmbus, durations, read_line, stop_process, wait_until

STOP = 2**64 - 1


def test_receive_timeout(bus):
    bus.create_topic("t", slots=8, slot_size=16)
    sub = bus.subscriber("t")

    def times_out():
        assert sub.receive(timeout=0.3) is None

    # Never early; not late either, in the fastest of three (conftest.durations).
    waited = durations(times_out, 3)
    assert min(waited) >= 0.29 and min(waited) < 1.0, waited

    def never_waits():
        assert sub.receive(timeout=0) is None
        assert sub.try_receive() is None

    assert min(durations(never_waits, 5)) < 0.05
    with pytest.raises(shmbus.InvalidArgument):
        sub.receive(timeout=-1)


def test_full_ring_block_raises_timeout(bus):
    bus.create_topic("t", slots=2, slot_size=16, policy="block")
    sub = bus.subscriber("t")  # gates the ring without consuming
    pub = bus.publisher("t", timeout=0.3)
    pub.publish(b"a")
    pub.publish(b"b")
    assert pub.try_publish(b"c") is False
    assert pub.try_loan(4) is None
    errors = []

    def times_out():
        with pytest.raises(shmbus.Timeout) as e:
            pub.publish(b"c")
        errors.append(e.value)

    waited = durations(times_out, 3)  # as in test_receive_timeout
    assert min(waited) >= 0.29 and min(waited) < 1.0, waited
    e = errors[0]
    assert isinstance(e, TimeoutError) and isinstance(e, shmbus.Error)
    assert "'t'" in str(e)
    with pytest.raises(shmbus.Timeout):
        pub.loan(4)
    pub.timeout = 0
    with pytest.raises(shmbus.WouldBlock):
        pub.publish(b"c")
    # Room made while a publish waits lets it through: the room is made once
    # this thread is seen asleep in publish (not after a fixed delay).
    pub.timeout = 60
    main_tid = threading.get_native_id()
    seen_asleep = []

    def make_room():
        seen_asleep.append(wait_until(lambda: asleep_on_shmbus(os.getpid(), main_tid), 30))
        sub.receive(timeout=5).release()

    helper = threading.Thread(target=make_room)
    helper.start()
    pub.publish(b"c")
    helper.join(timeout=30)
    assert not helper.is_alive()
    assert seen_asleep == [True]
    assert sub.lag == 2


def test_full_ring_reject_raises_would_block(bus):
    bus.create_topic("t", slots=2, slot_size=16, policy="reject")
    bus.subscriber("t")
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    pub.publish(b"a")
    pub.publish(b"b")
    errors = []

    def rejected():
        with pytest.raises(shmbus.WouldBlock) as e:
            pub.publish(b"c")
        errors.append(e.value)

    assert min(durations(rejected, 5)) < 0.1  # at once (the fastest: conftest.durations)
    assert isinstance(errors[0], BlockingIOError)
    assert pub.try_publish(b"c") is False
    assert sub.lag == 2


def test_receive_releases_the_gil(bus):
    bus.create_topic("t", slots=8, slot_size=16)
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    got = []
    # 60 s: the thread must still be waiting when this one is done below.
    th = threading.Thread(target=lambda: got.append(sub.receive(timeout=60)))
    th.start()
    # The thread is asleep inside receive (on the topic's futex, not the GIL's).
    assert wait_until(lambda: asleep_on_shmbus(os.getpid(), th.native_id), 10)
    # This thread runs Python meanwhile: a count, not a time, so a loaded
    # machine only makes it take longer. Were the GIL held by the receive,
    # this would only run once it had returned (its timeout), seen below.
    n = 0
    t0 = time.monotonic()
    while n <= 1000 or time.monotonic() - t0 < 0.1:
        n += 1
    still_waiting = th.is_alive() and not got
    pub.publish(b"x")
    th.join(timeout=30)
    assert not th.is_alive()
    assert still_waiting, "the receiving thread did not wait while this one ran"
    assert got[0] is not None and bytes(got[0]) == b"x"
    assert n > 1000


def test_close_from_another_thread_ends_a_receive_waiting_for_ever(bus):
    bus.create_topic("t", slots=8, slot_size=16)
    sub = bus.subscriber("t")
    raised = []

    def waits():
        try:
            sub.receive(timeout=None)
        except shmbus.Closed as e:
            raised.append(e)

    th = threading.Thread(target=waits)
    th.start()
    # close() once the thread is asleep inside receive: only the interrupt
    # that close() raises can end that wait (nothing is ever published).
    assert wait_until(lambda: asleep_on_shmbus(os.getpid(), th.native_id), 10)
    sub.close()
    th.join(timeout=30)
    assert not th.is_alive(), "close() did not end the waiting receive"
    assert len(raised) == 1 and "closed" in str(raised[0])


def test_a_release_does_not_wait_for_another_threads_receive(bus):
    bus.create_topic("t", slots=8, slot_size=16)
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    pub.publish(b"first")
    first = sub.receive(timeout=5)
    got = []
    waiter = threading.Thread(target=lambda: got.append(sub.receive(timeout=None)))
    waiter.start()
    assert wait_until(lambda: asleep_on_shmbus(os.getpid(), waiter.native_id), 10)
    # The waiter holds the subscriber's lock in the core; the release needs it.
    releaser = threading.Thread(target=first.release)
    releaser.start()
    releaser.join(timeout=30)
    assert not releaser.is_alive(), "the release waited for the receive to end"
    assert waiter.is_alive() and not got  # and the receive went on waiting
    assert sub.holding == 0
    pub.publish(b"second")
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert bytes(got[0]) == b"second"


def test_threads_share_a_subscriber(bus):
    # Receives, releases and the GC of samples from several threads: every
    # message is taken exactly once, nothing crashes.
    n = 5000
    bus.create_topic("t", slots=256, slot_size=16)
    sub = bus.subscriber("t")
    pub = bus.publisher("t", timeout=60)  # the consumers may be starved a while
    results = [[] for _ in range(4)]

    def consume(out):
        # Release each sample before waiting for the next: a held sample stops
        # the ring from moving past it (the threads share one gate).
        # Ends on a STOP message, not on a quiet second: a thread starved for
        # a while must not give up on messages still to come.
        k = 0
        while True:
            s = sub.receive(timeout=60)
            if s is None:
                return  # what it did not take shows in the check below
            v = int.from_bytes(s, "little")
            if v == STOP:
                return
            out.append(v)
            k += 1
            if k % 3 == 0:
                s.release()
            elif k % 3 == 1:
                with s:
                    pass
            else:
                del s  # freed by reference counting, in this thread

    threads = [threading.Thread(target=consume, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for i in range(n):
        pub.publish(i.to_bytes(8, "little"))
    for _ in threads:  # one each: a thread that took one takes no more
        pub.publish(STOP.to_bytes(8, "little"))
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    got = sorted(x for r in results for x in r)
    assert got == list(range(n))


def _interrupt(busenv, role, sig=signal.SIGINT, says="interrupted"):
    proc = busenv.worker(role, "t")
    try:
        assert read_line(proc, 20) == "waiting"
        # Inside the blocking call: asleep on the topic's futex.
        assert wait_until(lambda: asleep_on_shmbus(proc.pid), 10)
        t0 = time.monotonic()
        proc.send_signal(sig)
        assert read_line(proc, 5) == says
        elapsed = time.monotonic() - t0
        assert stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    # Prompt, not at some timeout (there is none: it would wait for ever). 3 s
    # leaves room for a loaded machine to schedule the child and this test.
    assert elapsed < 3.0, f"Ctrl-C took {elapsed:.3f} s"


def test_ctrl_c_interrupts_receive(busenv):
    busenv.bus.create_topic("t", slots=8, slot_size=16)
    _interrupt(busenv, "block-receive")


def test_a_signal_handler_may_use_the_object_a_receive_waits_on(busenv):
    # The handler runs while the main thread waits in receive() holding the
    # subscriber's lock: it must run with the lock released, or the release
    # and close() in it would deadlock the thread against itself.
    busenv.bus.create_topic("t", slots=8, slot_size=16)
    busenv.bus.publisher("t").publish(b"held")
    _interrupt(busenv, "close-in-handler", signal.SIGUSR1, "closed")


def test_ctrl_c_interrupts_blocked_publish(busenv):
    busenv.bus.create_topic("t", slots=4, slot_size=16)
    sub = busenv.bus.subscriber("t")  # gates the ring; never consumes
    _interrupt(busenv, "block-publish")
    assert sub.lag == 4


def test_errors_map_to_classes_with_cpp_messages(busenv, tmp_path):
    bus = busenv.bus
    bus.create_topic("t")
    with pytest.raises(shmbus.AlreadyExists, match=r"topic 't' already exists"):
        bus.create_topic("t")
    with pytest.raises(shmbus.NotFound, match=r"no topic 'nope'") as e:
        bus.open_topic("nope")
    assert isinstance(e.value, LookupError) and e.value.code == "not_found"
    with pytest.raises(shmbus.NotFound):
        bus.describe("nope")
    with pytest.raises(shmbus.NotFound):
        bus.subscriber("nope")
    with pytest.raises(shmbus.InvalidArgument, match=r"topic name 'a/b' contains '/'") as e:
        bus.create_topic("a/b")
    assert isinstance(e.value, ValueError)
    with pytest.raises(shmbus.InvalidArgument):
        bus.create_topic("odd", slots=3)
    with pytest.raises(shmbus.InvalidArgument, match="policy"):
        bus.create_topic("p", policy="drop")
    with pytest.raises(shmbus.InvalidArgument, match="wait"):
        bus.subscriber("t", wait="sometimes")
    bus.delete_topic("t")
    with pytest.raises(shmbus.NotFound):
        bus.delete_topic("t")
    with pytest.raises(shmbus.DaemonUnavailable, match="no shmbusd answers") as e:
        shmbus.connect(busenv.name, socket=str(tmp_path / "none.sock"), autospawn=False)
    assert isinstance(e.value, shmbus.Error)
    assert issubclass(shmbus.PermissionDenied, PermissionError)
    for cls in (shmbus.VersionMismatch, shmbus.Corrupt, shmbus.ResourceExhausted,
                shmbus.SystemFailure, shmbus.TooManyHeld, shmbus.Closed):
        assert issubclass(cls, shmbus.Error)


def test_resource_exhausted(bus):
    bus.create_topic("t", max_members=2)
    keep = [bus.subscriber("t", group="g") for _ in range(2)]
    with pytest.raises(shmbus.ResourceExhausted, match="member seats"):
        bus.subscriber("t", group="g")
    assert len(keep) == 2


def test_topics_and_describe(bus):
    bus.create_topic("a", slots=16, slot_size=128, policy="overwrite")
    bus.create_topic("b", slots=4, slot_size=32, single_producer=True)
    sub = bus.subscriber("a", group="workers", durable=True)
    pub = bus.publisher("a")
    pub.publish(b"1")
    topics = {t.name: t for t in bus.topics()}
    assert set(topics) == {"a", "b"}
    a = topics["a"]
    assert (a.slots, a.slot_size, a.policy, a.tail) == (16, 128, "overwrite", 1)
    assert topics["b"].single_producer and topics["b"].policy == "block"
    (g,) = a.groups
    assert (g.name, g.members, g.durable, g.lag) == ("workers", 1, True, 1)
    d = bus.describe("a").as_dict()
    assert d["groups"][0]["name"] == "workers" and d["producers"] == 1
    # An intact topic reports no damage (a quarantined one says what was found).
    assert a.damage == "" and d["damage"] == ""
    assert sub.group == "workers" and sub.policy == "overwrite"
    assert bus.open_topic("b").status().slots == 4
    assert os.path.exists(bus.socket_path)
    # The topic's own view agrees with the daemon's, counters included.
    mine = bus.open_topic("a").status()
    assert (mine.tail, mine.published, mine.published_bytes) == (1, 1, 1)
    assert mine.generation == bus.describe("a").generation != 0
    # if_not_exists: the existing topic, as it is.
    with pytest.raises(shmbus.AlreadyExists):
        bus.create_topic("a", slots=8)
    again = bus.create_topic("a", slots=8, if_not_exists=True)
    assert again.status().slots == 16 and again.status().generation == mine.generation


def test_fork_child_cannot_use_or_destroy_the_parents_objects(busenv):
    import gc
    import json
    bus = busenv.bus
    bus.create_topic("t", slots=4, slot_size=16)
    sub = bus.subscriber("t")
    pub = bus.publisher("t")
    pub.publish(b"held")
    s = sub.receive(timeout=5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every use raises; dropping everything frees nothing
        code = 1
        try:
            out = []
            for use in (lambda: sub.receive(timeout=0), lambda: pub.publish(b"x"),
                        lambda: bytes(s), lambda: s.release(), lambda: bus.topics(),
                        lambda: pub.loan(1), lambda: sub.lag, lambda: sub.close()):
                try:
                    use()
                    out.append("no error")
                except shmbus.Error as e:
                    out.append("fork" if "fork() child" in str(e) else str(e))
            own = busenv.connect()  # a connection of the child's own works
            out.append([t.name for t in own.topics()])
            del own
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os.close(w)
            # Drop the parent's objects, as the end of the child would.
            del s, sub, pub, bus
            busenv.bus = None
            gc.collect()
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert out == ["fork"] * 8 + [["t"]]
    # The parent's seat and held sample are untouched.
    assert bytes(s) == b"held" and sub.holding == 1
    assert bus.describe("t").groups[0].members == 1
    pub.publish(b"next")
    s.release()
    assert bytes(sub.receive(timeout=5)) == b"next"
