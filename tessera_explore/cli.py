"""The ``tessera-explore`` command line.

::

    tessera-explore lab [NOTEBOOK]                  JupyterLab on the tutorial notebooks
    tessera-explore app SOURCE [--bbox W S E N] [--year Y] [--port P]
                                                    the explorer alone, served by Voila
    tessera-explore fetch --bbox W S E N --year Y [--year Y2] --dest DIR [--source v1.1]
                                                    copy an area from a store (or --tiles: the tile server)
    tessera-explore info                            versions, cache locations and what they hold

``SOURCE`` of ``app`` is ``demo`` (the built-in scene, no network), a store name such as
``v1.1``, a store URL, a local store or tile folder.  ``--dry-run`` on ``lab`` and ``app``
prints the command instead of running it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]

_PACKAGES = ("tessera_explore", "numpy", "xarray", "dask", "distributed", "zarr", "obstore", "rasterio",
             "scikit-learn", "umap-learn", "torch", "ipyleaflet", "leafmap", "hvplot", "datashader",
             "jupyterlab", "voila")


def _notebooks_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "notebooks"
    return here if here.is_dir() else Path.cwd()


def _run(cmd: list[str], dry_run: bool, env: dict | None = None) -> int:
    if dry_run:
        print(" ".join(cmd))
        return 0
    exe = shutil.which(cmd[0]) or (os.path.join(os.path.dirname(sys.executable), cmd[0]))
    if not os.path.exists(exe):
        print(f"tessera-explore: {cmd[0]} is not installed in this environment", file=sys.stderr)
        return 1
    full = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"), **(env or {})}
    try:
        return subprocess.call([exe, *cmd[1:]], env=full)
    except KeyboardInterrupt:
        return 130


def _root_flag() -> list[str]:
    return ["--allow-root"] if hasattr(os, "getuid") and os.getuid() == 0 else []


def cmd_lab(args) -> int:
    nbdir = _notebooks_dir()
    target = nbdir / args.notebook if args.notebook else nbdir / "01_quickstart.ipynb"
    if args.notebook and not target.exists():
        print(f"tessera-explore: no notebook {target}", file=sys.stderr)
        return 2
    return _run(["jupyter", "lab", *_root_flag(), str(target if target.exists() else nbdir)], args.dry_run)


def app_notebook(source: str, *, bbox=None, year=None, labels=None, basemap: bool = True) -> dict:
    """The one-cell notebook Voila serves for ``tessera-explore app``."""
    import nbformat

    if source == "demo":
        open_code = "da = te.tutorial.open_demo(" + (f"{int(year)}" if year else "") + ")"
    else:
        if bbox is None:
            raise SystemExit("tessera-explore app: --bbox W S E N is needed for a store or tile folder")
        open_code = (f"da = te.open_embeddings({source!r}, bbox={tuple(float(v) for v in bbox)!r}"
                     + (f", year={int(year)}" if year else "") + ")")
    explore = "te.explore(da" + (f", labels={labels!r}" if labels else "") + ("" if basemap else ", basemap=False") + ")"
    code = "\n".join(["import tessera_explore as te", "te.load_bokeh_js()", open_code, explore])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code)]
    return nb


def cmd_app(args) -> int:
    import nbformat

    nb = app_notebook(args.source, bbox=args.bbox, year=args.year, labels=args.labels, basemap=not args.no_basemap)
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="tessera-app-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "explorer.ipynb"
    nbformat.write(nb, path)
    cmd = ["voila", str(path), f"--port={args.port}", "--no-browser", "--Voila.ip=" + args.ip]
    return _run(cmd, args.dry_run)


def cmd_fetch(args) -> int:
    bbox = tuple(float(v) for v in args.bbox)
    years = [int(y) for y in args.year]
    if args.tiles:
        from .io.fetch import fetch_tiles

        for y in years:
            fetch_tiles(bbox, y, dest=args.dest, dataset=args.source, base_url=args.base_url,
                        progress=not args.quiet)
        print(args.dest)
        return 0
    from .io.fetch_region import fetch_region

    depths = [int(d) for d in args.depth] if args.depth else None
    out = fetch_region(bbox, years, dest=args.dest, source=args.source, depths=depths, base_url=args.base_url,
                       progress=not args.quiet)
    print(out)
    return 0


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def info() -> dict:
    """Versions, cache locations and their contents (what ``tessera-explore info`` prints)."""
    from importlib.metadata import PackageNotFoundError, version

    from .config import CACHE_KINDS, cache_dir

    versions = {"python": sys.version.split()[0]}
    for p in _PACKAGES:
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            versions[p] = None
    caches = {}
    for kind in CACHE_KINDS:
        d = cache_dir(kind)
        entries = []
        if d.is_dir():
            for e in sorted(d.iterdir()):
                if e.name.startswith("."):
                    continue
                entries.append({"name": e.name, "bytes": _du(e) if e.is_dir() else e.stat().st_size})
        caches[kind] = {"path": str(d), "entries": entries, "bytes": sum(e["bytes"] for e in entries)}
    return {"versions": versions, "cache_root": str(cache_dir()), "caches": caches}


def cmd_info(args) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("versions:")
    for k, v in data["versions"].items():
        print(f"  {k:<16} {v or '(not installed)'}")
    print(f"cache root: {data['cache_root']}  (set TESSERA_EXPLORE_CACHE to move it)")
    for kind, c in data["caches"].items():
        print(f"  {kind:<8} {c['path']}  {_size(c['bytes'])} in {len(c['entries'])} item(s)")
        for e in c["entries"][:20]:
            print(f"           {e['name']}  {_size(e['bytes'])}")
        if len(c["entries"]) > 20:
            print(f"           ... {len(c['entries']) - 20} more")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tessera-explore", description="Explore TESSERA embeddings.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lab", help="open JupyterLab on the tutorial notebooks")
    p.add_argument("notebook", nargs="?", help="a notebook of the notebooks folder (default 01_quickstart.ipynb)")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    p.set_defaults(fn=cmd_lab)
    p = sub.add_parser("app", help="serve the explorer alone with Voila (a projector, a shared server)")
    p.add_argument("source", help="'demo', a store name (v1.1), a store URL, a local store or tile folder")
    p.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"))
    p.add_argument("--year", type=int)
    p.add_argument("--labels", help="label file (GeoJSON) the app reads and writes")
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (0.0.0.0 for a shared server)")
    p.add_argument("--no-basemap", action="store_true", help="no web basemap (offline rooms)")
    p.add_argument("--workdir", help="folder for the served notebook (default: a temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="write the notebook, print the command")
    p.set_defaults(fn=cmd_app)
    p = sub.add_parser("fetch", help="copy an area from a store (or the tile server) to a local folder")
    p.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), required=True)
    p.add_argument("--year", type=int, action="append", required=True, help="repeat for several years")
    p.add_argument("--dest", required=True)
    p.add_argument("--source", default="v1.1", help="dataset name, store URL or path (with --tiles: v1, v1.1)")
    p.add_argument("--depth", type=int, action="append", help="v2 stores: band counts to copy (repeatable)")
    p.add_argument("--base-url", help="a mirror of the published stores or tiles")
    p.add_argument("--tiles", action="store_true", help="download legacy NPY tiles instead of a store")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_fetch)
    p = sub.add_parser("info", help="versions, cache locations and what is cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .exceptions import TesseraExploreError

    try:
        return int(args.fn(args) or 0)
    except TesseraExploreError as e:
        print(f"tessera-explore {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
