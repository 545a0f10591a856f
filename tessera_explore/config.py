"""The one place for settings read from the environment (always at call time).

``cache_dir(kind)`` is where every cache of the package lives: the demo scene,
STAC search results and imagery, model weights and remote Zarr store chunks.

* ``$TESSERA_EXPLORE_CACHE`` when set;
* else ``$XDG_CACHE_HOME/tessera_explore`` when ``XDG_CACHE_HOME`` is set;
* else ``~/.cache/tessera_explore``.

Nothing here runs at import time: importing the package reads no environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "CACHE_KINDS", "version"]

#: Sub-folders of the cache root, one per kind of cached data.
CACHE_KINDS = ("demo", "stac", "weights", "zarr")


def cache_dir(kind: str | None = None) -> Path:
    """The cache folder for ``kind`` (one of :data:`CACHE_KINDS`), or the root for None.

    The folder is not created here; writers create it when they first write.
    """
    root = os.environ.get("TESSERA_EXPLORE_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "tessera_explore") if xdg else os.path.join(os.path.expanduser("~"), ".cache",
                                                                              "tessera_explore")
    if kind is None:
        return Path(root)
    if kind not in CACHE_KINDS:
        from .exceptions import TesseraExploreError

        raise TesseraExploreError(f"unknown cache kind {kind!r}; expected one of {CACHE_KINDS}")
    return Path(root) / kind


def version() -> str:
    """The installed package's version, from its metadata (one source of truth)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    try:
        return _v("tessera_explore")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
