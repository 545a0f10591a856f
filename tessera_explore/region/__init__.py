"""Regions larger than memory: the single-area verbs, chunk by chunk, on dask.distributed.

>>> import tessera_explore as te
>>> from distributed import Client, LocalCluster
>>> client = Client(LocalCluster(n_workers=4, threads_per_worker=1))   # or Client("tcp://scheduler:8786")
>>> clf = te.fit_classifier(te.open_embeddings("v1.1", bbox=small, year=2024), labels)
>>> job = te.run_region(te.predict_map, "v1.1", clf, bbox=county, year=2024,
...                     out="county-2024.zarr", client=client)
>>> job.open()                       # lazy Dataset(s), one per UTM zone, on native grids
>>> job.to_cog("county-2024.tif", variable="class")   # zones merged only here

Live encoding over a region (the encoder on every worker, loaded once)::

>>> job = te.embed_region(county, 2024, model="student.pt", out="county-live.zarr", client=client)
>>> te.open_embeddings("county-live.zarr", bbox=field, year=2024)   # opens like a published store

See :func:`run_region`, :func:`estimate_region`, :func:`open_region`,
:func:`region_to_cog`, :func:`embed_region` and ``docs/design/scale-out.md``.
"""

from __future__ import annotations

from .ops import RegionOp
from .output import open_region, region_to_cog
from .plan import ZoneSpec, plan_region
from .run import Estimate, RegionJob, estimate_region, run_region

__all__ = ["run_region", "estimate_region", "open_region", "region_to_cog", "RegionJob", "Estimate",
           "RegionOp", "ZoneSpec", "plan_region", "embed_region", "EncoderPlugin", "EmbedJob"]

#: live encoding (imports distributed on first use)
_ENCODE = ("embed_region", "EncoderPlugin", "EmbedJob", "EmbedEstimate", "plan_tiles")


def __getattr__(name: str):
    if name in _ENCODE:
        from . import encode

        return getattr(encode, name)
    raise AttributeError(f"module 'tessera_explore.region' has no attribute {name!r}")
