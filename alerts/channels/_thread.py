"""Blocking channel calls (HTTP, SMTP, Apprise) in daemon threads, so none can hold up a stop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["run_detached"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _resolve(future: asyncio.Future[_T], value: _T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[_T], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


async def run_detached(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a blocking call in a daemon thread of its own and return (or raise) what it did.

    ``asyncio.to_thread`` uses the loop's default executor, whose threads ``asyncio.run`` and
    the interpreter join at exit: a server that never answers would then hold the process up for
    as long as the call's own timeout (or for ever). Here, cancelling the await abandons the call;
    it ends by its own timeout, or with the process.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)

    def work() -> None:
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - handed over to the awaiting task
            done: Callable[[], None] = functools.partial(_fail, future, exc)
        else:
            done = functools.partial(_resolve, future, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(done)

    name = getattr(fn, "__name__", "call")
    threading.Thread(target=work, name=f"alerts-{name}", daemon=True).start()
    return await future
