"""GDAL's ``/vsicurl/`` memory of remote files, cleared after a failed read."""

from __future__ import annotations

import os

__all__ = ["clear_gdal_http_cache"]


def clear_gdal_http_cache() -> bool:
    """Forget what GDAL's ``/vsicurl/`` layer remembers of remote files (also failures).

    GDAL keeps, per URL and for the life of the process, what it learnt about a file,
    including that a request failed; without this a run after a server error in the same
    Python session would fail again without asking.  rasterio does not expose
    ``VSICurlClearCache``, so it is called through ctypes on the GDAL rasterio loaded.
    Returns False where that library cannot be found.
    """
    import ctypes
    import glob

    import rasterio

    libs = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)), "rasterio.libs",
                                         "libgdal*.so*")))
    if not libs:
        import ctypes.util

        found = ctypes.util.find_library("gdal")
        libs = [found] if found else []
    for lib in libs:
        try:
            ctypes.CDLL(lib).VSICurlClearCache()
            return True
        except (OSError, AttributeError):
            continue
    return False
