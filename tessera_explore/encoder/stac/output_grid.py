"""The output grid of a live area: the package's one grid type,
:class:`tessera_explore.io.grid.Grid` (``Grid(epsg, transform, (height, width))`` builds
it, ``crs`` reads ``"EPSG:n"`` and ``geobox()`` hands it to odc-stac), chosen from a
box or another array, and the size limits checked before anything is fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...exceptions import AreaTooLargeError, ArgumentError, StacError
from ...io.grid import Grid, utm_epsg

__all__ = ["Grid", "area_grid", "check_size"]


def area_grid(bbox: Sequence[float] | None, *, like: Any = None, epsg: int | None = None,
              resolution: float = 10.0) -> Grid:
    """The output grid of an area.

    ``bbox`` is ``(min_lon, min_lat, max_lon, max_lat)``.  The grid is in the UTM zone of
    the box's centre (or ``epsg``), snapped to multiples of ``resolution`` metres (which
    lines up with Sentinel-2's own 10 m and 20 m grids).  ``like`` (an array with
    ``.rio`` CRS and transform, e.g. precomputed embeddings) gives its grid instead, cut to
    ``bbox`` when one is given.
    """
    from pyproj import Transformer

    if like is not None:
        import rioxarray  # noqa: F401

        crs = like.rio.crs
        if crs is None or crs.to_epsg() is None:
            raise StacError("like= has no EPSG CRS")
        try:
            grid = Grid.from_coords(like, crs=int(crs.to_epsg()))
        except ArgumentError as err:
            raise StacError(f"like= does not hold a regular grid: {err}") from err
        if bbox is None:
            return grid
        tr = Transformer.from_crs(4326, grid.epsg, always_xy=True)
        rows, cols = grid.window_of_bounds(tr.transform_bounds(*bbox, densify_pts=21))
        if rows.stop <= rows.start or cols.stop <= cols.start:
            raise StacError(f"bbox {tuple(bbox)} does not overlap the grid of like=")
        return grid.window(rows, cols)
    if bbox is None or len(bbox) != 4:
        raise StacError("bbox must be (min_lon, min_lat, max_lon, max_lat)")
    lon0, lat0, lon1, lat1 = (float(v) for v in bbox)
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise StacError(f"bbox {tuple(bbox)} is not (min_lon, min_lat, max_lon, max_lat) in degrees")
    epsg = epsg or utm_epsg((lon0 + lon1) / 2, (lat0 + lat1) / 2)
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    bounds = tr.transform_bounds(lon0, lat0, lon1, lat1, densify_pts=21)
    return Grid.covering(bounds, int(epsg), float(resolution))


def check_size(grid: Grid, *, max_pixels: int | None, max_area_km2: float | None) -> None:
    """Refuse an area beyond the limits, explaining memory and time instead of running out."""
    n = grid.n_pixels
    km2 = n * abs(grid.transform.a * grid.transform.e) / 1e6
    over = (max_pixels is not None and n > max_pixels) or (max_area_km2 is not None and km2 > max_area_km2)
    if not over:
        return
    # a year: ~150 S2 granules x 11 bands x 2 bytes + ~120 S1 granules x 2 x 4 bytes, per pixel
    gib = n * (150 * 11 * 2 + 120 * 2 * 4) / 2**30
    hours = n / 100 / 3600  # about 100 px/s for the v2 small student on 2 CPU cores
    raise AreaTooLargeError(
        f"the area is {km2:.1f} km2 ({n:,} pixels at 10 m); the limits are max_area_km2={max_area_km2} and "
        f"max_pixels={max_pixels if max_pixels is None else format(max_pixels, ',')}. "
        f"A year of Sentinel-2 and Sentinel-1 for it is about {gib:.1f} GiB of "
        f"imagery to read and hold, and encoding takes about {hours:.1f} h on a 2-core CPU (much less on a GPU). "
        "Split the area into pieces (embeddings of the same model join without seams), or raise the limits "
        "if you have the memory and time."
    )
