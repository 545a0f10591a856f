"""Reading embeddings, from any source, onto one grid.

* ``grid``: the one raster-grid value type (:class:`~tessera_explore.io.grid.Grid`,
  defined beside the schema in ``tessera_explore._grid``) and the maths of the
  0.1-degree tile layout; ``read_metadata`` reads a tile folder's
  ``tessera_metadata.json``.
* ``layout``: the published store layout in one place (group, attribute, array and
  coordinate names, chunk grids, model numbers, the zone writers).
* ``store`` (the published Zarr stores, one group per UTM zone) read over ``http`` (the
  one seam for range requests to a store, through obstore, with a persistent cache);
  ``quality``: their per-pixel quality arrays on an opened array's grid.
* ``tiles`` (one legacy NPY tile or GeoTIFF export on disk) and ``fetch`` (downloading
  tiles: retries, checksums, the folder's metadata).
* ``mosaic``: many tiles placed on one output grid, read window by window (every tile
  kind follows its ``Tile`` protocol).
* ``codes``: the int8-codes seam (``iter_blocks``, ``codes_window``) and ``quant``: the
  per-pixel int8 quantisation the data are stored in.
* ``open``: ``open_embeddings``, the one opener; ``fetch_region``: local copies of the
  chunks a store area needs.
* ``labels``: label files (GeoJSON, the upstream notebook's JSON, CSV, vector files).

Nothing here imports ``project``, ``classify``, ``encoder``, ``region`` or ``widgets``
(see docs/design/layout.md).
"""
