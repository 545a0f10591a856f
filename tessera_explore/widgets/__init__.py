"""Map overlays, the projection scatter and (later) the explorer app.

No module here imports ipyleaflet, leafmap, holoviews or datashader at import time.
"""
