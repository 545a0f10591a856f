"""Deprecated: renamed :mod:`tessera_explore.encoder.granules`.

"prepare" also names :func:`tessera_explore.prepare` (an area's codes held in memory), so
the module that turns STAC granules into model input is now called ``granules``.  This
module re-exports every name of it and warns once when imported.
"""

import warnings

from .granules import *  # noqa: F403
from .granules import __all__  # noqa: F401

warnings.warn(
    "tessera_explore.encoder.prepare is renamed tessera_explore.encoder.granules; import that instead",
    DeprecationWarning,
    stacklevel=2,
)
