"""Reading and writing embeddings: tile grid maths, the geotessera layout, GeoTIFF, Zarr, downloads."""
