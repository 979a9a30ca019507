"""Shared fixtures for the shmbus Python tests.

Each test gets a bus of its own: a unique bus name, a socket in a fresh temp
dir, and a shmbusd started for it (autospawn, with the build tree's daemon),
which is shut down and waited for at the end, its regions removed.

Environment:
  SHMBUS_BUILD_DIR  the CMake build dir (default: <repo>/build/release); its
                    bindings/python is put first on sys.path unless
                    SHMBUS_TEST_INSTALLED=1 (then `import shmbus` must find it).
  SHMBUS_DAEMON     the shmbusd to run (default: <build>/daemon/shmbusd).
"""

import glob
import os
import pathlib
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("SHMBUS_BUILD_DIR", REPO / "build" / "release"))
PYDIR = BUILD / "bindings" / "python"
if os.environ.get("SHMBUS_TEST_INSTALLED") != "1" and (PYDIR / "shmbus").is_dir():
    sys.path.insert(0, str(PYDIR))

import shmbus  # noqa: E402

DAEMON = os.environ.get("SHMBUS_DAEMON") or str(BUILD / "daemon" / "shmbusd")
PEER = BUILD / "bindings" / "python" / "tests" / "shmbus_py_peer"
WORKER = pathlib.Path(__file__).with_name("_worker.py")


def process_gone(pid):
    """True once `pid` has exited (a zombie counts: it never runs again)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


# futex(2)'s number, for reading /proc/<pid>/syscall.
FUTEX_NR = {"x86_64": 202, "aarch64": 98}.get(platform.machine())


def asleep_on_shmbus(pid, tid=None):
    """True while the thread is inside a futex wait on a word in a shmbus
    region: /proc says which syscall it is blocked in and on which address,
    and /proc/<pid>/maps whether that address is in a shmbus region: a
    /dev/shm/shmbus.* file, or a shmbusd memfd (/memfd:shmbus.*).
    (A thread waiting for the GIL also sleeps in futex, but not on shmbus's.)"""
    task = f"/proc/{pid}/task/{tid}" if tid is not None else f"/proc/{pid}"
    try:
        with open(f"{task}/syscall") as f:
            fields = f.read().split()
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read().splitlines()
    except OSError:
        return False
    if FUTEX_NR is None or len(fields) < 2 or fields[0] != str(FUTEX_NR):
        return False
    addr = int(fields[1], 16)
    for line in maps:
        parts = line.split()
        if len(parts) >= 6 and (parts[5].startswith("/dev/shm/shmbus.")
                                or parts[5].startswith("/memfd:shmbus.")):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


def wait_until(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class BusEnv:
    """One test's bus: name, socket, the connected Bus, helpers for children."""

    def __init__(self, name, socket, directory, bus):
        self.name = name
        self.socket = socket
        self.dir = directory
        self.bus = bus

    def connect(self, **kw):
        """Another connection to this test's daemon."""
        return shmbus.connect(self.name, socket=self.socket, autospawn=False, **kw)

    def child_env(self):
        """Environment for a child Python that must import this same shmbus."""
        env = dict(os.environ)
        pkg_parent = str(pathlib.Path(shmbus.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
        return env

    def worker(self, *args):
        """Starts tests/python/_worker.py in a child Python (stdout piped)."""
        return subprocess.Popen(
            [sys.executable, str(WORKER), self.name, self.socket, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=self.child_env())


def durations(call, tries):
    """How long each of `tries` calls of `call()` took, in seconds.

    For bounds on how long a call may take: a loaded machine can stall any
    one call for a while, but a call that really is too slow is slow every
    time. So a test bounds the fastest (min) from above, and every one
    (all, or min again) from below.
    """
    out = []
    for _ in range(tries):
        t0 = time.monotonic()
        call()
        out.append(time.monotonic() - t0)
    return out


def read_line(proc, timeout):
    """The child's next stdout line, waiting at most `timeout` seconds.

    Reads the pipe's file descriptor directly (select() cannot see what a
    buffered reader has already taken in), keeping the rest for the next call.
    """
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = getattr(proc, "_shmbus_buf", b"")
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line from pid {proc.pid} within {timeout} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                err = proc.stderr.read() if proc.stderr else ""
                raise EOFError(f"pid {proc.pid} closed stdout; stderr: {err}")
            buf += chunk
    line, _, rest = buf.partition(b"\n")
    proc._shmbus_buf = rest
    return line.decode().strip()


def stop_process(proc, timeout=5):
    """Waits for a child; kills it if it outlives `timeout`."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
        raise


def spawn_daemon(name, socket, data_dir):
    """Connects to bus `name` on `socket`, autospawning its shmbusd with
    SHMBUS_DATA_DIR=data_dir in the environment it inherits."""
    saved = os.environ.get("SHMBUS_DATA_DIR")
    os.environ["SHMBUS_DATA_DIR"] = data_dir
    try:
        return shmbus.connect(name, socket=socket, daemon=DAEMON, autospawn=True)
    finally:
        if saved is None:
            del os.environ["SHMBUS_DATA_DIR"]
        else:
            os.environ["SHMBUS_DATA_DIR"] = saved


@pytest.fixture
def busenv():
    directory = tempfile.mkdtemp(prefix="shmbus-py-")
    os.chmod(directory, 0o755)
    name = f"py{os.getpid()}-{uuid.uuid4().hex[:10]}"
    socket = os.path.join(directory, "bus.sock")
    # The daemon is started by autospawn (connect with socket= and daemon=).
    # That connection is dropped at once and the test's own connects with
    # autospawn=False: a connection that may autospawn can start a new daemon
    # while this one shuts down (it sees the hang-up before the socket file is
    # gone), which would outlive the test.
    # File topics in the test's directory: the autospawned daemon inherits
    # SHMBUS_DATA_DIR (what a user's environment does for theirs).
    boot = spawn_daemon(name, socket, os.path.join(directory, "data"))
    pid = boot.daemon_pid
    del boot
    bus = shmbus.connect(name, socket=socket, autospawn=False)
    try:
        yield BusEnv(name, socket, directory, bus)
    finally:
        try:
            bus.shutdown_daemon()
        except shmbus.Error:
            pass
        if pid > 0 and not wait_until(lambda: process_gone(pid), 10):
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"shmbusd (pid {pid}) did not exit after shutdown_daemon()")
        for f in glob.glob(f"/dev/shm/shmbus.{name}.*"):
            try:
                os.unlink(f)
            except OSError:
                pass
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def bus(busenv):
    return busenv.bus
