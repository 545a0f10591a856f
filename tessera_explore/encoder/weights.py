"""Published TESSERA weights: registry, explicit verified download, safe loading.

* :data:`WEIGHTS` lists the published checkpoints (name, URL, size, checksum where known,
  licence, generation, parameter count).
* :func:`download_weights` fetches one into a cache folder, explicitly (nothing downloads
  behind the user's back), through the package's one HTTP client
  (:func:`tessera_explore.io.fetch.download`: retries, timeouts, resumable ``.part``
  files), verifying size and SHA-256 where known; it works for ``https://``, ``http://``
  and ``file://`` URLs, so tests serve a local file.
* :func:`load_encoder` reads every published layout with ``torch.load(weights_only=True)``,
  recognises the generation from the keys, builds the model with the checkpoint's sizes,
  loads it with ``strict=True`` and checks the parameter count.

Checkpoint layouts (as published; docs/design/encoder.md, "Checkpoints"):

* v2 student: ``{"args": {...}, "model": state_dict}``; sizes from ``args``.
* v1.0 QAT / v1.1: ``{"model_state" | "model_state_dict": state_dict, ...}``, keys may
  start with ``_orig_mod.``; only ``s2_backbone.*``, ``s1_backbone.*``, ``dim_reducer.*``
  are kept (the projector is training-only).  Sizes come from the tensor shapes.
* a bare state dict with those prefixes is accepted too.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .._atomic import sha256_file
from ..exceptions import CheckpointError, DownloadError, EncoderError
from .model import ARCHITECTURES, TesseraEncoder, count_parameters, resolve_device

__all__ = [
    "WeightsEntry",
    "WEIGHTS",
    "default_cache_dir",
    "weights_path",
    "download_weights",
    "read_checkpoint",
    "load_encoder",
]


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint.  ``sha256``/``size``/``params`` are ``None`` where unknown."""

    name: str
    generation: str
    url: str
    filename: str
    licence: str
    size: int | None = None
    sha256: str | None = None
    params: int | None = None
    params_approx: float | None = None
    data_source: str | None = None
    description: str = ""


_GDRIVE = "https://drive.google.com/uc?export=download&id={}"
_HF_V2 = "https://huggingface.co/geotessera/TESSERA-V-2.0-2B-L/resolve/main/ckpt/{}"

#: The published weights.  Weights are CC0 (code MIT).  Google Drive links may answer
#: with a confirmation page for large files; then download in a browser and pass the path.
WEIGHTS: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            "v1.0-qat", "v1.0", _GDRIVE.format("1HJ92aS5ERXMLfSFYJ4m3OKycJJdC1QvO"),
            "best_model_fsdp_20250608_220648_QAT.pt", "CC0-1.0", params=45_828_226,
            description="v1.0 QAT: the model behind the global 2024 product (dataset v1)",
        ),
        WeightsEntry(
            "v1.1-mpc", "v1.1", _GDRIVE.format("1t-gfTxi3Hg_uJXpJ9etROCRgKt2myfJ2"),
            "tessera_v1_1_mpc_encoder.pt", "CC0-1.0", params=57_708_738, data_source="mpc",
            sha256="5dab0f070d5711034f7c241e841eaeedb49fef90b9355f68c8f20b9507839ec3",
            description="v1.1 encoder for Planetary Computer inputs (checksum as reported downstream)",
        ),
        WeightsEntry(
            "v1.1-aws", "v1.1", _GDRIVE.format("1taLxwJOId-pfqUafEOCf5zDPXA7kzdyu"),
            "tessera_v1_1_aws_encoder.pt", "CC0-1.0", params=57_708_738, data_source="aws",
            description="v1.1 encoder for Earth Search (AWS) inputs",
        ),
        WeightsEntry("v2-nano", "v2", _HF_V2.format("student_nano.pt"), "student_nano.pt", "CC0-1.0",
                     params_approx=1.07e6, description="v2 beta student N (4 MB)"),
        WeightsEntry("v2-small", "v2", _HF_V2.format("student_small.pt"), "student_small.pt", "CC0-1.0",
                     params_approx=7.11e6, description="v2 beta student S (28 MB)"),
        WeightsEntry("v2-medium", "v2", _HF_V2.format("student_medium.pt"), "student_medium.pt", "CC0-1.0",
                     params_approx=21.03e6, description="v2 beta student M (84 MB)"),
        WeightsEntry("v2-large", "v2", _HF_V2.format("student_large.pt"), "student_large.pt", "CC0-1.0",
                     params_approx=43.83e6, description="v2 beta student L (175 MB)"),
    )
}


def default_cache_dir() -> Path:
    """The ``weights`` folder of :func:`tessera_explore.config.cache_dir` (read when
    called, never at import)."""
    from ..config import cache_dir

    return cache_dir("weights")


def _entry(name: str | WeightsEntry) -> WeightsEntry:
    if isinstance(name, WeightsEntry):
        return name
    try:
        return WEIGHTS[name]
    except KeyError:
        raise CheckpointError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}") from None


def weights_path(name: str | WeightsEntry, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``download_weights`` keeps ``name`` (the file may not exist yet)."""
    return Path(cache_dir or default_cache_dir()) / _entry(name).filename


def _verify(path: Path, entry: WeightsEntry) -> str:
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise DownloadError(f"{path} has {size} bytes, expected {entry.size} for {entry.name}")
    digest = sha256_file(path)
    expected = entry.sha256 or _pinned(path)  # trust on first use: the hash we saw then
    if expected is not None and digest != expected.lower():
        raise DownloadError(f"{path} has SHA-256 {digest}, expected {expected} for {entry.name}; delete it and download again")
    return digest


def download_weights(
    name: str | WeightsEntry,
    *,
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
    retries: int = 3,
    progress: bool = True,
) -> Path:
    """Download the published weights ``name`` into the cache (once) and verify them.

    ``url`` overrides the registry's address (a mirror, or a ``file://`` URL in tests).
    An existing cached file is verified instead of downloaded again unless ``force``.
    The transfer goes through :func:`tessera_explore.io.fetch.download`: ``retries``
    attempts in all with back-off, ``timeout`` seconds per connect and read, and a
    ``.part`` file next to the target that a later call resumes with an HTTP Range
    request; the file appears under its final name only once its size and SHA-256
    (the registry's, or the one pinned on first use) are right.
    Raises :class:`~tessera_explore.exceptions.DownloadError` when the transfer fails after
    ``retries`` attempts or what arrived fails its size or checksum.
    """
    from ..io.fetch import download

    entry = _entry(name)
    if url is not None:
        entry = replace(entry, url=url)
    target = weights_path(entry, cache_dir=cache_dir)
    if target.exists() and not force:
        _verify(target, entry)
        return target
    expected = (entry.sha256 or _pinned(target) or "").lower() or None
    try:
        download(
            entry.url, target, expected_size=entry.size, sha256=expected, retries=max(0, retries - 1),
            timeout=timeout, progress=progress, overwrite=True,
            check_response=lambda response: _refuse_web_page(entry, response),
        )
    except DownloadError as err:
        raise DownloadError(f"could not download {entry.name} from {entry.url}: {err}") from err
    digest = expected or sha256_file(target)
    _pin_file(target).write_text(f"{digest}  {target.name}\n")
    return target


def _pin_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _pinned(path: Path) -> str | None:
    """The SHA-256 recorded when ``path`` was first downloaded (trust on first use), if any."""
    pin = _pin_file(path)
    return pin.read_text().split()[0] if pin.exists() else None


def _refuse_web_page(entry: WeightsEntry, response) -> None:
    ctype = response.headers.get("Content-Type", "") or ""
    if "text/html" in ctype:
        raise DownloadError(
            f"{entry.url} answered with a web page, not the checkpoint (Google Drive asks to confirm "
            f"large files). Download {entry.filename} in a browser and pass its path to load_encoder."
        )


# --- reading checkpoints ----------------------------------------------------------------

_KEEP = ("s2_backbone.", "s1_backbone.", "dim_reducer.")


def read_checkpoint(path: str | os.PathLike, *, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Load a checkpoint file safely: ``torch.load(weights_only=True)``.

    Only tensors, plain containers and ``argparse.Namespace`` (for ``args``) are accepted.
    ``trust_checkpoint=True`` allows full unpickling: only for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if trust_checkpoint:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        hint = "" if trust_checkpoint else " If it holds other Python objects and you trust it, pass trust_checkpoint=True."
        raise CheckpointError(f"cannot read {path} as a safe PyTorch checkpoint: {exc}.{hint}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _plain(obj: Any) -> dict[str, Any]:
    if isinstance(obj, argparse.Namespace):
        return dict(vars(obj))
    return dict(obj) if isinstance(obj, dict) else {}


def _weight(kept: dict[str, torch.Tensor], key: str, ndim: int, source: str) -> torch.Tensor:
    """``kept[key]``, refused with a :class:`CheckpointError` naming the key and its shape
    unless it has ``ndim`` dimensions (a matrix where a linear layer's weight is expected)."""
    t = kept[key]
    if t.ndim != ndim:
        what = {1: "a vector", 2: "a matrix"}.get(ndim, f"{ndim}-D")
        raise CheckpointError(f"{source}: {key} has shape {tuple(t.shape)} ({t.ndim}-D); {what} is expected there "
                              "(a damaged or hand-edited checkpoint?)")
    return t


def parse_checkpoint(
    obj: dict[str, Any], *, source: str = "checkpoint"
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Recognise a checkpoint: ``(generation, config, filtered state dict, metadata)``."""
    meta: dict[str, Any] = {}
    if "model" in obj and "args" in obj:
        layout, state, args = "v2-student", obj["model"], _plain(obj["args"])
        meta["args"] = args
    elif "model_state" in obj or "model_state_dict" in obj:
        layout = "v1"
        state = obj.get("model_state", obj.get("model_state_dict"))
        args = _plain(obj.get("config"))
        meta["config"] = args
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        layout, state, args = "bare", obj, {}
    else:
        raise CheckpointError(
            f"{source} is not a TESSERA checkpoint: expected keys 'args' + 'model' (v2 student) or "
            f"'model_state' (v1.0/v1.1), found {sorted(obj)[:8]}"
        )
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: the state dict is a {type(state).__name__}")
    state = {(k[len("_orig_mod.") :] if k.startswith("_orig_mod.") else k): v for k, v in state.items()}
    kept = {k: v for k, v in state.items() if k.startswith(_KEEP)}
    not_tensors = sorted(k for k, v in kept.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        k = not_tensors[0]
        raise CheckpointError(f"{source}: {k} holds a {type(kept[k]).__name__}, not a tensor"
                              + (f" (and {len(not_tensors) - 1} more keys)" if len(not_tensors) > 1 else ""))
    if layout == "v2-student":
        dropped = sorted(set(state) - set(kept))
        if dropped:
            raise CheckpointError(f"{source}: unexpected keys outside the encoder: {dropped[:8]}")
    if "s2_backbone.embedding.0.weight" not in kept or "s1_backbone.embedding.0.weight" not in kept:
        raise CheckpointError(
            f"{source} is not a TESSERA encoder (another architecture?): no s2_backbone/s1_backbone "
            f"band embedding among its keys {sorted(state)[:6]}"
        )
    w2 = _weight(kept, "s2_backbone.embedding.0.weight", 2, source)
    w1 = _weight(kept, "s1_backbone.embedding.0.weight", 2, source)
    if w2.shape[1] != 10 or w1.shape[1] != 2:
        raise CheckpointError(
            f"{source}: band embeddings take {w2.shape[1]} (S2) and {w1.shape[1]} (S1) bands; TESSERA takes 10 and 2"
        )
    d = int(w2.shape[0])
    gru = any(k.startswith("s2_backbone.attn_pool.temporal_context.") for k in kept)
    has_mlp_head = "dim_reducer.4.weight" in kept
    if has_mlp_head:
        out = _weight(kept, "dim_reducer.4.weight", 2, source).shape[0]
    else:
        out = _weight(kept, "dim_reducer.0.weight", 2, source).shape[0] if "dim_reducer.0.weight" in kept else 0
    if gru and not has_mlp_head:
        generation = "v1.0"
    elif gru and has_mlp_head and out == 192:
        generation = "v1.1"
    elif not gru and has_mlp_head and out == 128:
        generation = "v2"
    else:
        raise CheckpointError(f"{source}: pooling ({'GRU' if gru else 'attention'}) and dim_reducer "
                              f"(output {out}) match no TESSERA generation")
    if layout == "v2-student" and generation != "v2":
        raise CheckpointError(f"{source} has the v2 student layout but {generation} weights")
    if layout == "v1" and generation == "v2":
        raise CheckpointError(f"{source} has the v1.x layout but v2 (attention-pooling) weights")

    qk = any(re.match(r"s2_backbone\.transformer_encoder\.\d+\.q_proj\.", k) for k in kept)
    layer_ids = {int(m.group(1)) for k in kept if (m := re.match(r"s2_backbone\.transformer_encoder\.(?:layers\.)?(\d+)\.", k))}
    if not layer_ids:
        raise CheckpointError(f"{source}: no transformer layers under s2_backbone.transformer_encoder")
    lin1 = "s2_backbone.transformer_encoder." + ("0" if qk else "layers.0") + ".linear1.weight"
    if lin1 not in kept:
        raise CheckpointError(f"{source}: missing {lin1}")
    config = dict(ARCHITECTURES[generation])
    config.update(latent_dim=d // 4, num_layers=max(layer_ids) + 1, dim_feedforward=int(_weight(kept, lin1, 2, source).shape[0]),
                  qk_norm=qk)
    if qk:
        q_norm = "s2_backbone.transformer_encoder.0.q_norm.weight"
        if q_norm not in kept:
            raise CheckpointError(f"{source}: missing {q_norm}")
        head = int(_weight(kept, q_norm, 1, source).shape[0])
        if head <= 0 or d % head:
            raise CheckpointError(f"{source}: q_norm of size {head} does not divide the model width {d}")
        config["nhead"] = d // head

    def number(key: str) -> int:
        v = args[key]
        try:
            n = int(v)
        except (TypeError, ValueError, OverflowError):
            raise CheckpointError(f"{source}: hyper-parameter {key}={v!r} is not a whole number") from None
        if isinstance(v, bool) or (isinstance(v, float) and v != n):
            raise CheckpointError(f"{source}: hyper-parameter {key}={v!r} is not a whole number")
        return n

    if "nhead" in args:
        config["nhead"] = number("nhead")
    if generation == "v2":  # the student's own record of its sizes, checked by the strict load
        for key, name in (("latent_dim", "latent_dim"), ("num_layers", "num_layers"), ("dim_feedforward", "dim_feedforward")):
            if key in args:
                config[name] = number(key)
        if "enable_qk_norm" in args:
            config["qk_norm"] = bool(args["enable_qk_norm"])
        if "repr_dim" in args and number("repr_dim") != 128:
            raise CheckpointError(f"{source}: repr_dim {args['repr_dim']} is not 128")
        dims = args.get("matryoshka_dims", "16,32,64,128")
        try:
            if isinstance(dims, str):
                dims = [int(x) for x in dims.replace(" ", "").split(",") if x]
            config["matryoshka_dims"] = tuple(int(x) for x in dims)
        except (TypeError, ValueError, OverflowError):
            raise CheckpointError(f"{source}: hyper-parameter matryoshka_dims={args.get('matryoshka_dims')!r} "
                                  "is not a list of whole numbers") from None
    try:
        from .model import check_sizes

        config = check_sizes(config, where=source)
    except EncoderError as err:
        raise CheckpointError(f"{err} (the checkpoint's hyper-parameters make no sense)") from None
    meta["layout"] = layout
    return generation, config, kept, meta


def _data_source(meta: dict[str, Any], path: str) -> str | None:
    cfg = meta.get("config") or {}
    for key in ("data_source", "norm_source", "source"):
        if cfg.get(key) in ("mpc", "aws"):
            return cfg[key]
    m = re.search(r"(?:^|[_\-.])(mpc|aws)(?:[_\-.]|$)", Path(path).name.lower())
    return m.group(1) if m else None


def load_encoder(
    path_or_name: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    generation: str | None = None,
    data_source: str | None = None,
    expected_params: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
    trust_checkpoint: bool = False,
) -> TesseraEncoder:
    """Load a TESSERA encoder from a checkpoint file or a registry name (see :data:`WEIGHTS`).

    The generation is recognised from the checkpoint (and, if ``generation`` is given,
    must equal it); the model is built with the checkpoint's sizes and loaded with
    ``strict=True``.  The parameter count is checked against ``expected_params`` or the
    registry's count.  For a registry name the cached file is used; it is downloaded only
    with ``download=True`` (or call :func:`download_weights` first).

    Returns a :class:`~tessera_explore.encoder.model.TesseraEncoder` in eval mode on
    ``device`` with ``.generation``, ``.data_source`` (v1.1), ``.config`` and ``.name``.
    """
    entry = None
    if isinstance(path_or_name, str) and path_or_name in WEIGHTS:
        entry = WEIGHTS[path_or_name]
        path = weights_path(entry, cache_dir=cache_dir)
        if download:
            path = download_weights(entry, cache_dir=cache_dir)
        elif not path.exists():
            raise CheckpointError(
                f"weights {entry.name!r} are not in the cache ({path}). Download them explicitly with "
                f"tessera_explore.encoder.download_weights({entry.name!r}) or pass download=True."
            )
        else:
            _verify(path, entry)
    else:
        path = Path(path_or_name)
    obj = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    found, config, state, meta = parse_checkpoint(obj, source=str(path))
    wanted = generation or (entry.generation if entry else None)
    if wanted is not None and wanted != found:
        raise CheckpointError(f"{path} holds a {found} encoder, not {wanted}")
    source = data_source or (entry.data_source if entry else None) or _data_source(meta, str(path))
    name = entry.name if entry else path.stem
    model = TesseraEncoder(found, config, data_source=source if found == "v1.1" else None, name=name)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the {found} encoder it looks like: {exc}") from exc
    n = count_parameters(model)
    stored = sum(t.numel() for t in state.values())
    if stored != n:
        raise CheckpointError(f"{path}: {stored} stored values for {n} parameters")
    expected = expected_params if expected_params is not None else (entry.params if entry else None)
    if expected is not None and n != expected:
        raise CheckpointError(f"{path}: {n:,} parameters, expected {expected:,}")
    if expected is None and entry is not None and entry.params_approx and abs(n / entry.params_approx - 1) > 0.01:
        raise CheckpointError(f"{path}: {n:,} parameters, expected about {entry.params_approx:,.0f}")
    model.checkpoint_meta = meta
    model.eval()
    if device is not None:
        model.to(resolve_device(device))
    return model
