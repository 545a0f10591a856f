"""Seeded synthetic data for tests, notebooks and users: tiles, scenes, and more.

``make_tiles`` writes tiles in the exact geotessera folder layout; the scene behind
them (``scene_classes``) gives the true land cover anywhere, so examples can check
what a classifier found.
"""

from .scene import CLASS_COLORS, CLASSES, scene_classes, scene_embeddings
from .tiles import make_tiles, tile_grid

__all__ = ["make_tiles", "tile_grid", "scene_classes", "scene_embeddings", "CLASSES", "CLASS_COLORS"]
