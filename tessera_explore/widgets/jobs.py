"""The explorer's job queue: one worker thread, jobs of one kind coalesced.

A job is queued under a key.  A job of the same key still waiting is replaced by the
newer one (both callers get the newer result), so ten fast clicks retrain once or twice,
never ten times.  A job may also drop waiting jobs of other keys (``supersedes``): a
retrain makes a pending score of the old classifier pointless.

The queue knows nothing of widgets or of the explorer's state: it reports through
callbacks (busy or idle, a job starting, finishing or failing), which the controller
turns into state traits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = ["JobQueue"]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: Future
    title: str
    quiet: bool = False
    cancelled: bool = False


def _nothing(*_args) -> None:
    return None


class JobQueue:
    """Jobs run one at a time on a worker thread of their own.

    Parameters
    ----------
    on_busy : ``on_busy(bool)`` when the first job is queued (True) and when the last one
        has finished (False).
    on_start, on_finish : ``on_start(title)`` / ``on_finish(title)`` around each job that is
        not ``quiet`` (the status line and progress bar of the app).
    on_error : ``on_error(exception, title)`` when a job raises (the future raises it too).
    name : prefix of the worker thread's name.
    """

    def __init__(self, *, on_busy: Callable[[bool], Any] = _nothing, on_start: Callable[[str], Any] = _nothing,
                 on_finish: Callable[[str], Any] = _nothing,
                 on_error: Callable[[BaseException, str], Any] = _nothing, name: str = "tessera-explore"):
        self._on_busy, self._on_start, self._on_finish, self._on_error = on_busy, on_start, on_finish, on_error
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.RLock()
        self._queued: dict[str, _Job] = {}
        self._running = 0

    @property
    def busy(self) -> int:
        """Jobs queued or running (0 when idle)."""
        with self._lock:
            return self._running

    def submit(self, key: str, fn: Callable[[], Any], title: str, *, quiet: bool = False,
               supersedes: tuple = ()) -> Future:
        """Queue ``fn``.  A job of the same ``key`` still waiting is replaced (its future
        resolves with the newer job's result).  A ``quiet`` job is not reported to
        ``on_start``/``on_finish`` (background work the user did not ask for).  Jobs of the
        keys in ``supersedes`` still waiting are dropped (their futures give None)."""
        with self._lock:
            for other in supersedes:
                old = self._queued.pop(other, None)
                if old is not None:
                    old.cancelled = True
            queued = self._queued.get(key)
            if queued is not None:
                queued.fn, queued.title, queued.quiet = fn, title, quiet
                return queued.future
            job = _Job(fn, Future(), title, quiet)
            self._queued[key] = job
            self._running += 1
            first = self._running == 1
        if first:
            self._on_busy(True)
        self._pool.submit(self._run, key, job)
        return job.future

    def _run(self, key: str, job: _Job) -> None:
        with self._lock:
            if self._queued.get(key) is job:
                del self._queued[key]
            fn, title, quiet, cancelled = job.fn, job.title, job.quiet, job.cancelled
        if cancelled:
            job.future.set_result(None)
            self._done()
            return
        if not quiet:
            self._on_start(title)
        try:
            result = fn()
        except Exception as err:
            log.debug("explorer job %s failed", key, exc_info=True)
            self._on_error(err, title)
            job.future.set_exception(err)
        else:
            job.future.set_result(result)
        finally:
            if not quiet:
                self._on_finish(title)
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._running -= 1
            idle = self._running == 0
        if idle:
            self._on_busy(False)

    def wait(self, timeout: float | None = 120.0) -> None:
        """Block until every queued job (and any job they queued) has finished; a
        :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                self._pool.submit(_nothing).result(timeout=left)
            except TimeoutError:
                raise TimeoutError("the explorer is still busy") from None
            with self._lock:
                if self._running == 0:
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the explorer is still busy")

    def close(self) -> None:
        """Finish the running job, drop the waiting ones and stop the worker."""
        self._pool.shutdown(wait=True, cancel_futures=True)
