"""The ``tessera-explore`` command line.

::

    tessera-explore lab [PATH]                      JupyterLab on a notebook or folder (default: the quickstart)
    tessera-explore app SOURCE [--bbox W S E N] [--year Y] [--labels FILE] [--port P]
                                                    the explorer alone, served by Voila
    tessera-explore fetch --bbox W S E N --year Y [--year Y2] --dest DIR [--source v1.1]
                                                    copy an area from a store (or --tiles: the tile server)
    tessera-explore info                            versions, cache locations and what they hold

``PATH`` of ``lab`` is a notebook or folder, relative to the current folder; JupyterLab is
rooted at the current folder when PATH lies below it, else at PATH's folder, so its file
browser reaches the neighbours of PATH.  Without PATH it opens the tutorial quickstart
rooted at the checkout (so ``notebooks/`` and ``workshop/`` are both reachable).

``SOURCE`` of ``app`` is ``demo`` (the built-in scene, no network), a store name such as
``v1.1``, a store URL, a local store or tile folder.  The app reads and writes its labels
in ``--labels`` (default ``tessera_labels.geojson`` in the current folder; its exports go
beside it), and says where in its first line of output.  Ctrl-C (or SIGTERM) stops Voila,
which shuts its kernel down, so the label file's lock goes with it; a lock left by a
kernel that died anyway is removed once its process is gone.  ``--dry-run`` on ``lab``
and ``app`` prints the command instead of running it.

A failure prints one line on stderr, ``tessera-explore COMMAND: what went wrong``, naming
the path, URL or argument, and no traceback (``--traceback`` shows one).  Exit status:
0 done; 1 the command could not be done (a destination that is a file, lies below a file
or is not writable, a store that cannot be read, any error of the package); 2 the
command line itself is wrong (argparse's convention); 130 interrupted (Ctrl-C); 143
stopped by SIGTERM (``app`` and ``lab``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["main"]

_PACKAGES = ("tessera_explore", "numpy", "xarray", "dask", "distributed", "zarr", "obstore", "rasterio",
             "scikit-learn", "umap-learn", "torch", "ipyleaflet", "leafmap", "hvplot", "datashader",
             "jupyterlab", "voila")


class _Refused(Exception):
    """A failure the CLI reports as one line, with its exit status (1 unless said)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def _os_error(err: OSError) -> str:
    """``Permission denied: /x`` for an ``OSError`` (its text and file names, no ``[Errno 13]``)."""
    what = err.strerror or str(err) or type(err).__name__
    if err.filename is not None:
        what += f": {os.fsdecode(err.filename)}"
        if err.filename2 is not None:
            what += f" -> {os.fsdecode(err.filename2)}"
    return what


def _check_folder(path: str, flag: str) -> Path:
    """Refuse (with a :class:`_Refused` naming ``flag`` and the path) a folder argument
    that cannot be created or written: a file, a path below a file, a read-only place."""
    p = Path(os.path.abspath(path))  # as the command will use it (the shell expands ~)
    if os.path.lexists(p) and not p.is_dir():
        kind = "a broken link" if p.is_symlink() and not p.exists() else "a file"
        raise _Refused(f"{flag} {path} is {kind}, not a folder")
    above = p
    while not os.path.lexists(above) and above.parent != above:
        above = above.parent
    if not above.is_dir():
        raise _Refused(f"{flag} {path} cannot be created: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        where = f"{flag} {path} is" if above == p else f"{flag} {path} cannot be created: {above} is"
        raise _Refused(f"{where} not writable (read-only, or another user's)")
    return p


#: the label file ``tessera-explore app`` uses in the current folder when ``--labels`` is not given
#: (the explorer's own default name, ``tessera_explore.widgets.app.DEFAULT_LABELS``)
APP_LABELS = "tessera_labels.geojson"
#: seconds a stopping server is given to shut its kernels down before it is terminated
_STOP_WAIT = 30.0


def _checkout() -> Path | None:
    """The source checkout holding the tutorial notebooks (``notebooks/01_quickstart.ipynb``),
    or None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "notebooks" / "01_quickstart.ipynb").is_file() else None


def _lab_target(notebook: str | None, cwd: Path) -> tuple[Path, Path | None]:
    """``(root_dir, file)`` of ``tessera-explore lab [PATH]``: PATH resolved against ``cwd``;
    the server is rooted at ``cwd`` when PATH lies below it, else at PATH's folder (PATH
    itself for a folder).  Without PATH: the quickstart, rooted at the checkout."""
    if notebook is None:
        root = _checkout()
        if root is None:
            return cwd, None
        return root, root / "notebooks" / "01_quickstart.ipynb"
    target = Path(os.path.normpath(cwd / os.path.expanduser(notebook)))
    if not target.exists():
        hint = ""
        root = _checkout()
        if root is not None and Path(notebook).name == notebook:
            for folder in ("notebooks", "workshop"):
                if (root / folder / notebook).exists():
                    hint = f" (the tutorial is {root / folder / notebook})"
                    break
        raise _Refused(f"no notebook or folder {target}{hint}", status=2)
    if target.is_dir():
        if target == cwd or cwd in target.parents:
            return cwd, None if target == cwd else target
        return target, None
    if cwd in target.parents:
        return cwd, target
    return target.parent, target


def _lock_owner(lock: Path) -> int | None:
    """The process id a label file's lock names, when the lock is the label store's and of
    this computer (else None: not ours to judge)."""
    try:
        held = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(held, dict) or held.get("host") != socket.gethostname():
        return None
    if not str(held.get("owner", "")).startswith("tessera_explore"):
        return None
    try:
        pid = int(held.get("pid"))
    except (TypeError, ValueError):
        return None
    return pid if pid > 0 else None


def remove_stale_lock(labels: str | os.PathLike, *, wait: float = 0.0) -> bool:
    """Remove the lock of label file ``labels`` (``labels + ".lock"``) when the process it
    names (on this computer) is gone, waiting up to ``wait`` seconds for that process to
    exit.  True when a lock was removed; a lock of a live process, of another computer or
    in another format is left alone."""
    from .classify.labels import pid_alive

    lock = Path(os.fspath(labels) + ".lock")
    deadline = time.monotonic() + wait
    while True:
        pid = _lock_owner(lock)
        if pid is None or pid == os.getpid():
            return False
        if not pid_alive(pid):
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    try:
        lock.unlink()
    except FileNotFoundError:
        return False
    return True


class _Stopped(Exception):
    """The command was stopped by SIGTERM (exit status 143)."""


def _run(cmd: list[str], dry_run: bool, env: dict | None = None, *, own_group: bool = False) -> int:
    """Run ``cmd`` (a program of this environment) until it exits; its exit status.

    Ctrl-C and SIGTERM never kill the server outright: it is asked to stop and given
    ``_STOP_WAIT`` seconds to shut its kernels down (so they release what they hold, such
    as a label file's lock), then terminated, then killed; each further Ctrl-C or SIGTERM
    takes the next step at once.  With ``own_group`` the program runs in its own session,
    so a Ctrl-C at the terminal reaches it once, forwarded from here (Voila); else it sees
    the terminal's Ctrl-C itself, and decides (JupyterLab asks "Shutdown this server?").
    After a Ctrl-C this raises KeyboardInterrupt, after a SIGTERM :class:`_Stopped`."""
    if dry_run:
        print(" ".join(cmd))
        return 0
    exe = shutil.which(cmd[0]) or (os.path.join(os.path.dirname(sys.executable), cmd[0]))
    if not os.path.exists(exe):
        print(f"tessera-explore: {cmd[0]} is not installed in this environment", file=sys.stderr)
        return 1
    full = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"), **(env or {})}

    def on_term(signum, frame):
        raise _Stopped()

    proc = subprocess.Popen([exe, *cmd[1:]], env=full, start_new_session=own_group,
                            stdin=subprocess.DEVNULL if own_group else None)
    old = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    received: list[int] = []
    escalate = iter([signal.SIGTERM, signal.SIGKILL])
    deadline = None
    try:
        while True:
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                status = proc.wait(timeout)
                break
            except (KeyboardInterrupt, _Stopped) as err:
                sig = signal.SIGINT if isinstance(err, KeyboardInterrupt) else signal.SIGTERM
                received.append(sig)
                if len(received) == 1:
                    if own_group or sig == signal.SIGTERM:
                        _signal(proc, sig, own_group)
                        deadline = time.monotonic() + _STOP_WAIT
                elif own_group or sig == signal.SIGTERM or len(received) > 2:
                    _signal(proc, next(escalate, signal.SIGKILL), own_group)
                    deadline = time.monotonic() + 5.0
            except subprocess.TimeoutExpired:
                _signal(proc, next(escalate, signal.SIGKILL), own_group)
                deadline = time.monotonic() + 5.0
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if received and received[0] == signal.SIGINT:
        raise KeyboardInterrupt
    if received:
        raise _Stopped()
    return status


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    """Send ``sig`` to ``proc`` (to its whole process group when it has its own)."""
    try:
        if group and sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)  # the kernels too: they would outlive a killed server
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _root_flag() -> list[str]:
    return ["--allow-root"] if hasattr(os, "getuid") and os.getuid() == 0 else []


def cmd_lab(args) -> int:
    root, target = _lab_target(args.notebook, Path.cwd())
    cmd = ["jupyter", "lab", *_root_flag(), f"--ServerApp.root_dir={root}"]
    return _run(cmd + ([str(target)] if target is not None else []), args.dry_run)


def app_notebook(source: str, *, bbox=None, year=None, labels=None, basemap: bool = True) -> dict:
    """The one-cell notebook Voila serves for ``tessera-explore app``.  ``labels`` is best
    an absolute path: the kernel runs in the notebook's (temporary) folder."""
    import nbformat

    if source == "demo":
        open_code = "da = te.tutorial.open_demo(" + (f"{int(year)}" if year else "") + ")"
    else:
        if bbox is None:
            raise SystemExit("tessera-explore app: --bbox W S E N is needed for a store or tile folder")
        open_code = (f"da = te.open_embeddings({source!r}, bbox={tuple(float(v) for v in bbox)!r}"
                     + (f", year={int(year)}" if year else "") + ")")
    explore = ("app = te.explore(da" + (f", labels={os.fspath(labels)!r}" if labels else "")
               + ("" if basemap else ", basemap=False") + ")")
    code = "\n".join(["import tessera_explore as te", "te.load_bokeh_js()", open_code, explore, "app"])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code)]
    return nb


def cmd_app(args) -> int:
    import nbformat

    if args.source != "demo" and args.bbox is None:
        raise _Refused("--bbox W S E N is needed for a store or tile folder", status=2)
    folder = _check_folder(args.workdir, "--workdir") if args.workdir else None
    labels = Path(os.path.abspath(os.path.expanduser(args.labels or APP_LABELS)))  # the kernel runs elsewhere
    if labels.is_dir():
        raise _Refused(f"--labels {args.labels or APP_LABELS} is a folder, not a label file")
    _check_folder(str(labels.parent), "--labels folder")
    nb = app_notebook(args.source, bbox=args.bbox, year=args.year, labels=str(labels), basemap=not args.no_basemap)
    folder = folder or Path(tempfile.mkdtemp(prefix="tessera-app-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "explorer.ipynb"
    nbformat.write(nb, path)
    print(f"labels: {labels} (read and written by the app; exports go beside it)", flush=True)
    cmd = ["voila", str(path), f"--port={args.port}", "--no-browser", "--Voila.ip=" + args.ip]
    try:
        return _run(cmd, args.dry_run, own_group=True)
    finally:
        if not args.dry_run and remove_stale_lock(labels, wait=5.0):
            _say("app", f"removed the stale lock {labels}.lock (its kernel had stopped without releasing it)")


def cmd_fetch(args) -> int:
    bbox = tuple(float(v) for v in args.bbox)
    w, so, e, n = bbox
    if not (w < e and so < n):
        raise _Refused(f"--bbox {w:g} {so:g} {e:g} {n:g} is not W S E N with W < E and S < N", status=2)
    years = [int(y) for y in args.year]
    _check_folder(args.dest, "--dest")
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


def _du(path: Path, problems: list[str]) -> int:
    """Bytes under ``path``; what cannot be read is added to ``problems`` (never skipped silently)."""
    total = 0
    for dirpath, _, files in os.walk(path, onerror=lambda err: problems.append(_os_error(err))):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError as err:
                problems.append(_os_error(err))
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
        entries, problems = [], []
        above = d
        while not os.path.lexists(above) and above.parent != above:
            above = above.parent
        if not above.is_dir():
            problems.append(f"{above} is a file, not a folder")
        try:
            listing = sorted(d.iterdir()) if d.is_dir() else []
        except OSError as err:
            listing = []
            problems.append(_os_error(err))
        for e in listing:
            if e.name.startswith("."):
                continue
            try:
                size = _du(e, problems) if e.is_dir() else e.lstat().st_size
            except OSError as err:
                size = 0
                problems.append(_os_error(err))
            entries.append({"name": e.name, "bytes": size})
        caches[kind] = {"path": str(d), "entries": entries, "bytes": sum(e["bytes"] for e in entries)}
        if problems:  # sizes are then lower bounds
            caches[kind]["problems"] = problems
    return {"versions": versions, "cache_root": str(cache_dir()), "caches": caches}


def cmd_info(args) -> int:
    data = info()
    unreadable = [(c["path"], c["problems"]) for c in data["caches"].values() if c.get("problems")]
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_info(data)
    if unreadable:
        path, problems = unreadable[0]
        more = len(problems) - 1 + sum(len(p) for _, p in unreadable[1:])
        raise _Refused(f"cannot read the cache {path}: {problems[0]}" + (f" (and {more} more)" if more else "")
                       + "; its sizes are lower bounds")
    return 0


def _print_info(data: dict) -> None:
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
        for problem in c.get("problems", [])[:5]:
            print(f"           cannot read: {problem}")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tessera-explore", description="Explore TESSERA embeddings.")
    ap.add_argument("--traceback", action="store_true", help="on an error, show the traceback (for bug reports)")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lab", help="open JupyterLab on a notebook or folder (default: the tutorial quickstart)")
    p.add_argument("notebook", nargs="?", metavar="PATH",
                   help="a notebook or folder, relative to the current folder (default: the tutorial quickstart)")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    p.set_defaults(fn=cmd_lab)
    p = sub.add_parser("app", help="serve the explorer alone with Voila (a projector; one page at a time, "
                       "since the label file has one writer)")
    p.add_argument("source", help="'demo', a store name (v1.1), a store URL, a local store or tile folder")
    p.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"))
    p.add_argument("--year", type=int)
    p.add_argument("--labels", help=f"label file (GeoJSON) the app reads and writes (default: {APP_LABELS} "
                   "in the current folder)")
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


def _say(command: str, message: str) -> None:
    """One line on stderr (a multi-line message is joined, so it stays one line)."""
    line = " ".join(str(message).split())
    try:
        print(f"tessera-explore {command}: {line}", file=sys.stderr, flush=True)
    except OSError:  # stderr itself is gone
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module's docstring)."""
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:
        return 130
    from .exceptions import TesseraExploreError

    try:
        status = int(args.fn(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is met below rather than at exit
        return status
    except KeyboardInterrupt:
        _say(args.command, "interrupted")
        return 130
    except _Stopped:
        _say(args.command, "stopped (SIGTERM)")
        return 143
    except _Refused as e:
        _say(args.command, str(e))
        return e.status
    except BrokenPipeError:  # the reader went away (``tessera-explore info | head -1``)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except TesseraExploreError as e:
        if args.traceback:
            traceback.print_exc()
        _say(args.command, str(e))
        return 1
    except OSError as e:
        if args.traceback:
            traceback.print_exc()
        _say(args.command, _os_error(e))
        return 1
    except Exception as e:  # a bug: one line, the traceback on request
        if args.traceback:
            traceback.print_exc()
        _say(args.command, f"unexpected {type(e).__name__}: {e} (a bug: please report it with what "
                           f"'tessera-explore --traceback {args.command} ...' prints)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
