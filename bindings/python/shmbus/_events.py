"""Event-loop integration: shmbus.select, and asyncio on Subscriber.fileno().

A subscriber's descriptor (Subscriber.fileno()) becomes readable when a
receive may find a message; a receive that comes up empty arms it again.
Everything here is built on that: select() waits on several descriptors with
one select(2), and the asyncio calls wait with loop.add_reader, so the event
loop is never blocked and a cancelled task leaves nothing behind.
"""

import asyncio as _asyncio
import select as _select
import time as _time
import weakref as _weakref

from ._shmbus import Publisher as _Publisher
from ._shmbus import Subscriber as _Subscriber
from ._shmbus import Timeout as _Timeout
from ._shmbus import WouldBlock as _WouldBlock


def select(subscribers, timeout=None):
    """Waits up to `timeout` seconds (None: for ever) until one of
    `subscribers` may have a message, with one sleep for all of them.

    Returns the list of those that are ready (in the order given), empty
    when the timeout passed. Readiness is a hint: receive with timeout=0.
    Interruptible with Ctrl-C."""
    subs = list(subscribers)
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0, not {timeout}")
    ready = [s for s in subs if s.ready]
    if ready or not subs:
        return ready
    fds = {s.fileno(): s for s in subs}
    # Descriptors armed before a last look: a message that came between the
    # look above and fileno() has made its descriptor readable already.
    readable, _, _ = _select.select(list(fds), [], [], timeout)
    return [s for s in subs if s.fileno() in readable or s.ready]


async def _readable(fd, timeout):
    """Waits until `fd` is readable; False when `timeout` (None: for ever)
    passed first. Cancellation removes the reader."""
    loop = _asyncio.get_running_loop()
    fut = loop.create_future()

    def wake():
        if not fut.done():
            fut.set_result(True)

    loop.add_reader(fd, wake)
    try:
        if timeout is None:
            return await fut
        try:
            return await _asyncio.wait_for(fut, timeout)
        except _asyncio.TimeoutError:
            return False
    finally:
        loop.remove_reader(fd)


async def receive_async(self, timeout=None):
    """receive_async(timeout: float | None = None) -> Sample | None

    As receive(), awaited: the event loop runs other tasks while it waits
    (loop.add_reader on fileno()). None when the timeout passed. Cancellable
    (asyncio.wait_for, Task.cancel): a cancelled wait takes no message."""
    deadline = None if timeout is None else _time.monotonic() + timeout
    while True:
        s = self.receive(timeout=0)  # arms the descriptor when nothing is there
        if s is not None:
            return s
        left = None if deadline is None else deadline - _time.monotonic()
        if left is not None and left <= 0:
            return None
        if not await _readable(self.fileno(), left):
            return self.receive(timeout=0)


def _aiter(self):
    return self


# The sample `async for` yielded last, per subscriber: released when the
# next is asked for (the subscriber holds at most 64).
_last_yielded = _weakref.WeakKeyDictionary()


async def _anext(self):
    """The next sample, awaited for ever (async for sample in sub). Each
    sample is released when the next is asked for, as in iteration."""
    prev = _last_yielded.pop(self, None)
    if prev is not None:
        prev.release()
    s = await self.receive_async()
    _last_yielded[self] = s
    return s


async def publish_async(self, data, timeout=None, **kwargs):
    """publish_async(data, timeout=None, **route) -> None

    As publish(), awaited: when the topic is full (policy 'block') it waits
    for room without blocking the event loop, polling try_publish with a
    back-off of 50 us to 5 ms (no descriptor says "room"). Raises Timeout
    after `timeout` seconds (None: the publisher's own timeout). Cancellable:
    a cancelled call published nothing."""
    if timeout is None:
        timeout = self.timeout
    deadline = None if timeout is None else _time.monotonic() + timeout
    pause = 50e-6
    while True:
        if self.try_publish(data, **kwargs):
            return
        if self.policy != "block":
            raise _WouldBlock(f"topic '{self.topic}' is full (policy '{self.policy}'): "
                              "the message was not accepted")
        if deadline is not None and _time.monotonic() >= deadline:
            raise _Timeout(f"topic '{self.topic}' stayed full for {timeout} s (policy "
                           "'block'): no room for the message; consumers are slow or gone")
        await _asyncio.sleep(pause)
        pause = min(pause * 2, 5e-3)


_Subscriber.receive_async = receive_async
_Subscriber.__aiter__ = _aiter
_Subscriber.__anext__ = _anext
_Publisher.publish_async = publish_async
