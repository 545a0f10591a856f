"""The Jupyter side: map overlays, the projection scatter and the explorer app
(``explore``: traitlets state, a controller that computes off the main thread, views).

No module here imports ipyleaflet, leafmap, holoviews or datashader at import time.
"""
