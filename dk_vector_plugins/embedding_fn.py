"""Calling an ``embedding_fn`` of any shape from async code (dataknobs-data 0.11's
``dataknobs_data.vector.embedding_fn``: ``call_embedding_fn``, ``call_embedding_fn_batch``).

An embedding function may be an ``async def``, a plain function, an object whose ``__call__`` is
either, or a plain function that returns a coroutine. An async callable is awaited on the event
loop; a sync one runs in a worker thread (embedding is CPU or network work), and whatever it
returns is awaited when it is awaitable, so a coroutine is never taken for a vector.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["call_embedding_fn", "call_embedding_fn_batch", "is_async_callable"]


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine by its definition: an ``async def`` (also
    through ``functools.partial``) or an object whose ``__call__`` is one."""
    while hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's __call__, not callable()
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


async def _await_or_offload(fn: Callable[..., Any], argument: Any, timeout: float | None) -> Any:
    """``fn(argument)``: awaited when ``fn`` is async (within ``timeout``), else run in a worker
    thread and its result awaited (within ``timeout``) when it is awaitable. A sync call itself
    is not bounded: a thread cannot be cancelled."""
    if is_async_callable(fn):
        return await asyncio.wait_for(fn(argument), timeout)
    result = await asyncio.to_thread(fn, argument)
    if inspect.isawaitable(result):
        return await asyncio.wait_for(result, timeout)
    return result


async def call_embedding_fn(
    embedding_fn: Callable[..., Any], text: str, *, timeout: float | None = None
) -> Any:
    """One embedding: ``embedding_fn(text)``, awaited or run off the event loop as its shape
    needs. ``timeout`` (seconds) bounds an awaitable result; ``TimeoutError`` when exceeded.
    Returns what the function returned (resolved if it was awaitable), unchecked."""
    return await _await_or_offload(embedding_fn, text, timeout)


async def call_embedding_fn_batch(
    embedding_fn: Callable[..., Any], texts: list[str], *, timeout: float | None = None
) -> Any:
    """A batch of embeddings: ``embedding_fn(texts)`` in one call, on the rules of
    :func:`call_embedding_fn`."""
    return await _await_or_offload(embedding_fn, list(texts), timeout)
