"""Seeded synthetic data for tests, notebooks and users: tiles, scenes, and more.

``make_store`` writes it as a Zarr store in the published layout (``make_icechunk``
as the Icechunk copy), ``make_tiles`` as tiles in the exact geotessera folder layout; the scene behind
them (``scene_classes``) gives the true land cover anywhere, so examples can check
what a classifier found.
"""

from .proxy import latency_proxy
from .scene import CLASS_COLORS, CLASSES, scene_classes, scene_embeddings
from .store import make_icechunk, make_store
from .tiles import make_tiles, tile_grid

__all__ = ["make_store", "make_icechunk", "make_tiles", "tile_grid", "scene_classes", "scene_embeddings", "CLASSES",
           "CLASS_COLORS", "latency_proxy"]
