"""One rooted exception hierarchy for tessera_explore.

Every error the package raises on purpose derives from :class:`TesseraExploreError`,
so ``except tessera_explore.TesseraExploreError`` catches exactly our errors.  Where a
builtin exception family fits, the class derives from it too (``FileNotFoundError``,
``ValueError``), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "TesseraExploreError",
    "SchemaError",
    "TileError",
    "TileNotFoundError",
    "CorruptTileError",
    "MissingLandmaskError",
    "NoTilesInAreaError",
    "YearNotAvailableError",
    "VersionMismatchError",
    "StoreError",
    "DownloadError",
    "ProjectionError",
    "LabelError",
    "ClassifierError",
    "EncoderError",
    "CheckpointError",
    "StacError",
    "AreaTooLargeError",
    "ArgumentError",
    "ArgumentTypeError",
    "GeoreferenceError",
    "LabelConflictError",
    "DeviceError",
]


class TesseraExploreError(Exception):
    """Root of every error raised on purpose by tessera_explore."""


class SchemaError(TesseraExploreError, ValueError):
    """A DataArray does not follow the embeddings schema (see ``tessera_explore._schema``)."""


class TileError(TesseraExploreError):
    """A tile on disk cannot be used; the message names the file."""


class TileNotFoundError(TileError, FileNotFoundError):
    """A tile that the area and year need is not on disk."""


class CorruptTileError(TileError, ValueError):
    """A tile file is truncated, corrupt, or inconsistent with its partner files."""


class MissingLandmaskError(TileError, FileNotFoundError):
    """The landmask GeoTIFF that carries a tile's CRS and transform is missing."""


class NoTilesInAreaError(TileError, ValueError):
    """A bounding box touches no available tile."""


class YearNotAvailableError(TileError, ValueError):
    """The requested year is not present for the source."""


class VersionMismatchError(TesseraExploreError, ValueError):
    """Embeddings of different dataset versions or model generations were combined."""


class StoreError(TesseraExploreError, OSError):
    """A Zarr store cannot be opened or read: unreachable, a key missing, a response malformed.

    The message names the store URL or path (and the key) that failed.
    """


class DownloadError(TesseraExploreError, OSError):
    """A download failed after its retries, or what arrived failed its checks."""


class ProjectionError(TesseraExploreError, ValueError):
    """A PCA/UMAP projection cannot be fitted or applied."""


class LabelError(TesseraExploreError, ValueError):
    """Labels are invalid, unreadable, or do not fit the embeddings."""


class ClassifierError(TesseraExploreError, ValueError):
    """A classifier cannot be trained or applied."""


class EncoderError(TesseraExploreError):
    """The TESSERA encoder cannot run on the given input."""


class CheckpointError(EncoderError, ValueError):
    """A checkpoint file is of another architecture, incomplete or unsafe."""


class StacError(TesseraExploreError):
    """A STAC search or asset load failed."""


class AreaTooLargeError(TesseraExploreError, ValueError):
    """An area exceeds a documented size limit; the message says how to proceed."""


class ArgumentError(TesseraExploreError, ValueError):
    """An argument has a value that cannot be used; the message names the argument."""


class ArgumentTypeError(TesseraExploreError, TypeError):
    """An argument is of a type that cannot be used; the message names the argument."""


class GeoreferenceError(CorruptTileError):
    """A tile's CRS or transform does not fit its name and grid (wrong zone, rotated,
    pixels of the wrong size, or placed away from the tile); the message names the file."""


class LabelConflictError(LabelError):
    """A label file is being edited by someone else (its lock is held, or it changed on
    disk in a way that cannot be merged); nothing was written."""


class DeviceError(EncoderError, ValueError):
    """The requested compute device (e.g. ``"cuda"``) is not available here."""


class TesseraExploreWarning(UserWarning):
    """(Not an error, so not in ``__all__``.)  A notice from tessera_explore: something was done that the user should know about
    (a stale lock taken over, a label file merged with changes made elsewhere)."""
