"""Reading embeddings: the published Zarr stores (``store``, ``http``), the legacy tile
layout (``grid``, ``tiles``, ``fetch``), GeoTIFF exports, the mosaic that places every
source on one grid (``mosaic``), the int8-codes seam (``codes``), ``open_embeddings``
(``open``) and ``fetch_region`` (local copies of store areas)."""
