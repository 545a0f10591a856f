"""What every explorer view shares: :func:`guarded` widget callbacks, work moved to the
kernel's main thread, and small HTML widgets."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from .session import ExplorerClosedError
from .state import ExplorerState

__all__ = ["guarded", "on_main_thread", "html_widget"]

log = logging.getLogger(__name__)


def guarded(state: ExplorerState, doing: str) -> Callable:
    """Decorator: run a widget callback, showing any exception in ``state.error``."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ExplorerClosedError:
                raise  # the app is gone: nothing to show it in
            except Exception as err:
                log.debug("explorer callback %s failed", doing, exc_info=True)
                state.error = f"{doing} failed: {type(err).__name__}: {err}"
                return None

        return inner

    return wrap


def on_main_thread(fn: Callable[[], Any]) -> None:
    """Run ``fn`` on the kernel's main thread (its event loop), where Bokeh documents are
    changed; at once when called there or outside a kernel (scripts, tests)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        try:
            from IPython import get_ipython

            loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
        except ImportError:
            loop = None
        if loop is not None:
            loop.add_callback(fn)  # thread-safe
            return
    fn()



def html_widget(value: str, css: str):
    """An ``ipywidgets.HTML`` of ``value`` with the CSS class ``css``."""
    import ipywidgets as W

    w = W.HTML(value)
    w.add_class(css)
    return w

