"""shmbus: a shared-memory message bus for processes on one Linux host.

Topics are rings of fixed-size slots in shared memory; publishers write into
slots and subscribers read them in place, with no copy and no daemon on the
data path. A coordinator daemon, shmbusd, creates topics and cleans up after
processes that die; :func:`connect` starts one when none runs.

Example::

    import numpy as np
    import shmbus

    bus = shmbus.connect("demo")
    bus.create_topic("frames", slots=64, slot_size=1 << 20)
    sub = bus.subscriber("frames")
    pub = bus.publisher("frames")

    with pub.loan(4096 * 4) as buf:             # write straight into the slot
        np.frombuffer(buf, dtype=np.float32)[:] = 1.0

    sample = sub.receive(timeout=1.0)           # Sample, or None on timeout
    with sample:
        a = np.frombuffer(sample, dtype=np.float32)   # zero copy, read-only
        print(sample.sequence, a.sum())

``sub.receive_batch(max)`` takes up to `max` consecutive messages as one
:class:`Batch` (zero copy, one release); ``sub.receive_copy(buf)`` copies the
next message into a bytearray or NumPy array and frees its slot at once.
Bulk work without a Python loop: ``pub.publish_batch(array)`` publishes the
rows of an (n, size) array, ``sub.receive_into(array)`` fills one.

Push and event loops: ``sub.listen(callback, threads=4)`` calls a callback on
worker threads; ``shmbus.select([s1, s2], timeout)`` waits on several
subscribers; ``sub.fileno()`` suits select/epoll/``loop.add_reader``; and
``await sub.receive_async()``, ``async for s in sub``, ``await
pub.publish_async(data)`` serve asyncio.

Blocking calls release the GIL and can be interrupted with Ctrl-C. Errors are
:class:`Error` subclasses carrying the C++ library's messages (in the Python
spelling: ``slots=``, ``shmbus.connect(daemon=...)``):

=====================  ================================================
InvalidArgument        bad name, size or option (also a ValueError)
NotFound               no such topic (also a LookupError)
AlreadyExists          the topic exists already
PermissionDenied       refused by the daemon's rules or the OS
VersionMismatch        region made by another layout version
Corrupt                the region's header is invalid
ResourceExhausted      no free producer seat, group or member seat
SystemFailure          a system call failed (C++ ErrorCode::SystemError)
DaemonUnavailable      no shmbusd answers and none could be started
Timeout                publish/loan: the ring stayed full (also a TimeoutError)
WouldBlock             publish/loan: full under policy 'reject' (BlockingIOError)
TooLarge               message larger than the slot size, or a receive_copy
                       buffer smaller than it (also a ValueError)
TooManyHeld            64 samples held unreleased by one subscriber
Closed                 released sample, ended loan, closed publisher/subscriber
TopicDeleted           the topic was deleted (receive: once the rest is drained)
InUse                  delete_topic(if_unused=True) refused: seats are attached
=====================  ================================================

Processes: use the 'spawn' (or 'forkserver') start method of multiprocessing.
In a child made by fork(), objects inherited from the parent raise Error when
used (and are never destroyed there); the child may connect() afresh.
"""

import os as _os

try:
    from . import _shmbus  # noqa: F401  (the compiled part)
except ImportError as _e:  # pragma: no cover
    raise ImportError(
        f"shmbus: the compiled module _shmbus is not in {_os.path.dirname(__file__)}; "
        "this is probably the source tree (bindings/python/shmbus). Build the project "
        "and put <build>/bindings/python first on PYTHONPATH, or install it."
    ) from _e

from ._shmbus import (  # noqa: E402
    AlreadyExists,
    Batch,
    BatchSample,
    Bus,
    Closed,
    Corrupt,
    DaemonUnavailable,
    Error,
    GroupPartitionStatus,
    GroupStatus,
    InUse,
    InvalidArgument,
    Listener,
    Loan,
    MemberStatus,
    Message,
    MessageInfo,
    NotFound,
    PartitionStatus,
    PermissionDenied,
    Publisher,
    ResourceExhausted,
    Sample,
    SampleIterator,
    Subscriber,
    SystemFailure,
    Timeout,
    TooLarge,
    TooManyHeld,
    Topic,
    TopicDeleted,
    TopicStatus,
    VersionMismatch,
    WouldBlock,
    partition_for_key,
)
from ._shmbus import _connect  # noqa: E402
from ._events import select  # noqa: E402  (also adds the asyncio methods)

try:  # written by the build: where shmbusd is in the build tree (None once installed)
    from ._paths import DAEMON as _BUILD_DAEMON
except ImportError:  # pragma: no cover
    _BUILD_DAEMON = None

from ._shmbus import __version__  # noqa: E402  (the library's, set by CMake)

__all__ = [
    "connect",
    "partition_for_key",
    "select",
    "Listener",
    "Message",
    "Bus",
    "Topic",
    "TopicStatus",
    "GroupStatus",
    "MemberStatus",
    "PartitionStatus",
    "GroupPartitionStatus",
    "Publisher",
    "Loan",
    "Subscriber",
    "Sample",
    "SampleIterator",
    "Batch",
    "BatchSample",
    "MessageInfo",
    "Error",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "VersionMismatch",
    "Corrupt",
    "ResourceExhausted",
    "SystemFailure",
    "DaemonUnavailable",
    "Timeout",
    "WouldBlock",
    "TooLarge",
    "TooManyHeld",
    "Closed",
    "TopicDeleted",
    "InUse",
]


def _default_daemon():
    if _os.environ.get("SHMBUS_DAEMON"):
        return None  # the C++ library reads SHMBUS_DAEMON itself
    if _BUILD_DAEMON and _os.access(_BUILD_DAEMON, _os.X_OK):
        return _BUILD_DAEMON
    return None  # shmbusd beside the interpreter, then on PATH


def connect(name="default", autospawn=True, socket=None, daemon=None, timeout=5.0,
            daemon_uid=None):
    """Connects to the shmbusd of bus `name`, starting one when none answers.

    name:      the bus name (topics of different buses never meet).
    autospawn: start shmbusd when none answers (unless SHMBUS_NO_AUTOSPAWN=1).
    socket:    the daemon's socket path; None: $SHMBUS_SOCKET, then
               $XDG_RUNTIME_DIR/shmbus/<name>.sock or /tmp/shmbus-<uid>/<name>.sock.
    daemon:    the shmbusd executable to start; None: $SHMBUS_DAEMON, then the
               one in the build tree this module was built in, then shmbusd
               beside the Python interpreter or on PATH.
    timeout:   seconds per request to the daemon (and to start it).
    daemon_uid: also trust a daemon running as this uid (a bus shared through a
               service account); None: only this user's or root's daemon
               (or $SHMBUS_DAEMON_UID).

    Raises DaemonUnavailable when no daemon answers and none can be started.
    The daemon runs on after this process exits; stop it with
    Bus.shutdown_daemon().
    """
    if daemon is None:
        daemon = _default_daemon()
    return _connect(
        name,
        bool(autospawn),
        None if socket is None else _os.fspath(socket),
        None if daemon is None else _os.fspath(daemon),
        float(timeout),
        None if daemon_uid is None else int(daemon_uid),
    )
