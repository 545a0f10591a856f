"""Run the encoder over many pixels: batching by bucket, devices, precision, progress.

:func:`embed_pixels` is the array-level entry point; area and folder helpers reshape their
``(T, H, W, ...)`` arrays to ``(T, N, ...)`` pixels and call it.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from ..exceptions import EncoderError
from .preprocess import GENERATIONS, PixelInputs, band_stats

__all__ = ["embed_pixels", "default_batch_size", "resolve_amp"]

OUT_DIM = 128
#: Tokens (pixels x time steps) per forward pass at width 256; scaled by 256 / width.  On
#: CPU a small batch keeps the feed-forward intermediates near the caches (measured best
#: around 4 k tokens on 2 cores; 32 k was ~1.3-1.5x slower).
_TOKENS_CPU = 4_096
_TOKENS_CUDA = 1_048_576
#: Generations whose published inference runs in bf16 (the authors' own timings use it).
BF16_OK = {"v1.0": True, "v1.1": True, "v2": True}


def default_batch_size(model: torch.nn.Module, s2_length: int, s1_length: int, device: torch.device) -> int:
    """Pixels per forward pass: a token budget (larger on CUDA) over the sequence lengths."""
    width = int(getattr(model, "config", {}).get("latent_dim", 64)) * 4
    budget = (_TOKENS_CUDA if device.type == "cuda" else _TOKENS_CPU) * 256 // max(width, 1)
    return int(np.clip(budget // max(s2_length + s1_length, 1), 8, 65_536))


def resolve_amp(amp: Any, device: torch.device, generation: str) -> torch.dtype | None:
    """The autocast dtype: ``None`` (float32), ``torch.bfloat16`` or ``torch.float16``.

    ``amp=None`` picks bf16 on CUDA where the GPU and the generation allow it, float32 on
    CPU (so CPU results equal the float32 reference); ``False``/``"fp32"`` forces float32.
    """
    if amp is None:
        if device.type == "cuda" and BF16_OK.get(generation, False) and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp is False or amp in ("fp32", "float32"):
        return None
    if amp is True or amp in ("bf16", "bfloat16", torch.bfloat16):
        return torch.bfloat16
    if amp in ("fp16", "float16", torch.float16):
        return torch.float16
    raise EncoderError(f"amp must be None, False, 'bf16' or 'fp16', got {amp!r}")


@contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model always has parameters
        return torch.device("cpu")


def embed_pixels(
    model: torch.nn.Module,
    s2: np.ndarray,
    s2_doy: np.ndarray,
    s2_mask: np.ndarray,
    s1_asc: np.ndarray | None = None,
    s1_asc_doy: np.ndarray | None = None,
    s1_desc: np.ndarray | None = None,
    s1_desc_doy: np.ndarray | None = None,
    *,
    pixels: np.ndarray | None = None,
    pixel_ids: np.ndarray | None = None,
    data_source: str | None = None,
    seed: int = 0,
    n_draws: int = 1,
    dims: int | None = None,
    quantize: bool = False,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    amp: Any = None,
    compile: bool = False,
    num_threads: int | None = None,
    int8: bool = False,
    progress: bool = True,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Embed pixels from raw time series; float32 ``(N, 128)``, NaN where a pixel has no data.

    Parameters
    ----------
    model
        An encoder from :func:`~tessera_explore.encoder.load_encoder` (it carries its
        ``generation``, which decides statistics and time-step rules).
    s2, s2_doy, s2_mask
        Sentinel-2 raw digital numbers ``(T, N, 10)`` in channel order B04, B02, B03, B08,
        B8A, B05, B06, B07, B11, B12; days of year ``(T,)`` in 1..366; clear mask ``(T, N)``.
        ``T`` may be 0.
    s1_asc, s1_asc_doy, s1_desc, s1_desc_doy
        Sentinel-1 ascending / descending ``(T, N, 2)`` (VV, VH; int16 dB-scaled, 0 =
        missing) and their days of year; ``None`` for none.
    pixels
        Indices (or a boolean mask) of the pixels to compute; the others are NaN.
    pixel_ids
        Global ids of the ``N`` pixels for v1.0's random draw (default ``0..N-1``); pass the
        flat index in the whole area when embedding it in pieces, so results do not depend
        on the piece.
    data_source
        ``"mpc"`` or ``"aws"`` for v1.1 (default: the model's own).
    seed, n_draws
        v1.0 only: the draw's seed and how many draws to average.
    dims
        Keep the first ``dims`` values (v2 Matryoshka prefixes 16, 32, 64).
    quantize
        Return ``(codes int8 (N, dims), scales float32 (N,))`` (the published
        storage: ``codes * scales`` dequantises; scale NaN where there is no data) instead of floats.
    batch_size, device, amp, compile, num_threads
        Speed: pixels per forward (default from a token budget), the device (default the
        model's), autocast (default bf16 on CUDA, float32 on CPU), ``torch.compile``, and
        CPU threads (default: torch's, all cores).
    int8
        CPU only, not the default: dynamic int8 quantisation of the transformer layers'
        linear products (``torch.ao.quantization.quantize_dynamic``).  Measured on 2 cores:
        1.26x float32's speed, cosine to float32 >= 0.9996 per pixel, values off by up to
        0.1 (see ``docs/design/encoder.md``).
    progress
        Show a tqdm bar over pixels.

    A pixel without any valid observation in either sensor gets NaN; a sensor without
    valid observations is fed all-zero rows (day 0), as the reference does.
    """
    generation = getattr(model, "generation", None)
    if generation not in GENERATIONS:
        raise EncoderError("model has no known .generation; load it with tessera_explore.encoder.load_encoder")
    if n_draws < 1:
        raise EncoderError("n_draws must be at least 1")
    if n_draws > 1 and generation != "v1.0":
        raise EncoderError(f"n_draws applies to v1.0's random draw only; {generation} is deterministic")
    source = data_source or getattr(model, "data_source", None)
    band_stats(generation, source)  # fails early for v1.1 without a data source
    dims = check_dims(model, dims)
    inputs = PixelInputs(s2, s2_doy, s2_mask, s1_asc, s1_asc_doy, s1_desc, s1_desc_doy)
    n = inputs.n_pixels
    sel = None
    if pixels is not None:
        pixels = np.asarray(pixels)
        sel = np.flatnonzero(pixels) if pixels.dtype == bool else pixels.astype(np.int64)
        if pixels.dtype == bool and pixels.shape != (n,):
            raise EncoderError(f"pixels mask must have shape ({n},)")
    ids = np.arange(n, dtype=np.int64) if pixel_ids is None else np.asarray(pixel_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise EncoderError(f"pixel_ids must have shape ({n},)")

    from .model import resolve_device

    dev = resolve_device(device) if device is not None else _model_device(model)
    model = model.to(dev).eval()
    if int8:
        if dev.type != "cpu":
            raise EncoderError("int8=True (dynamic int8 quantisation) runs on CPU only; use amp='bf16' on a GPU")
        model = _int8_model(model)
    dtype = resolve_amp(amp, dev, generation)
    forward = torch.compile(model, dynamic=True) if compile else model
    out = np.full((n, OUT_DIM), np.nan, dtype=np.float32)
    plan = inputs.plan(generation, sel)
    total = int(sum(g[2].size for g in plan))

    from tqdm.auto import tqdm

    cuda = dev.type == "cuda"
    workers = _cpu_workers(num_threads) if dev.type == "cpu" and not compile else 1

    def one(s2_len, s1_len, pix):
        acc = None
        for draw in range(n_draws):
            s2_x, s1_x = inputs.batch(
                generation, pix, s2_len, s1_len, data_source=source, seed=seed, draw=draw, pixel_ids=ids[pix]
            )
            y = _run(forward, s2_x, s1_x, dev, dtype)
            acc = y if acc is None else acc + y
        if n_draws > 1:
            acc = acc / n_draws
        return acc

    chunks = []
    for s2_len, s1_len, group in plan:
        bs = batch_size or default_batch_size(model, s2_len, s1_len, dev)
        chunks.extend((s2_len, s1_len, group[i : i + bs]) for i in range(0, group.size, bs))
    bar = tqdm(total=total, unit="px", desc=f"TESSERA {generation}", disable=not progress, smoothing=0.1)
    with bar:
        if workers > 1:
            _embed_parallel(one, chunks, out, workers, bar)
        else:
            pending: list = []
            with _threads(num_threads if dev.type == "cpu" else None), torch.inference_mode():
                for s2_len, s1_len, pix in chunks:
                    acc = one(s2_len, s1_len, pix)
                    if cuda:  # copy back asynchronously; collect after the next batch is queued
                        host = torch.empty(acc.shape, dtype=torch.float32, pin_memory=True)
                        host.copy_(acc, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record()
                        pending.append((pix, host, event))
                        if len(pending) > 1:
                            _collect(out, *pending.pop(0))
                    else:
                        out[pix] = acc.numpy()
                    bar.update(pix.size)
                while pending:
                    _collect(out, *pending.pop(0))
    out = out[:, :dims]
    if quantize:
        from ..io.quant import quantize as _quantize

        return _quantize(out)
    return out


def _int8_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose transformer layers' ``nn.Linear`` run dynamic int8 (kept on the model,
    so repeated calls quantise once).  Embedding, pooling (the GRU reads raw weights) and
    ``dim_reducer`` stay float32."""
    cached = getattr(model, "_tessera_int8", None)
    if cached is not None:
        return cached
    import copy
    import warnings

    from torch.ao.quantization import quantize_dynamic

    q = copy.deepcopy(model)
    with warnings.catch_warnings():  # torch.ao's deprecation notices
        warnings.simplefilter("ignore")
        for backbone in (q.s2_backbone, q.s1_backbone):
            backbone.transformer_encoder = quantize_dynamic(backbone.transformer_encoder, {torch.nn.Linear},
                                                            dtype=torch.qint8)
    model.__dict__["_tessera_int8"] = q  # not a submodule: state_dict and .to() ignore it
    return q


def _cpu_workers(num_threads: int | None) -> int:
    """CPU worker threads: ``num_threads`` or torch's intra-op thread count (all cores)."""
    n = int(num_threads) if num_threads is not None else torch.get_num_threads()
    if n < 1:
        raise EncoderError(f"num_threads must be at least 1, got {num_threads}")
    return n


def _embed_parallel(one, chunks, out, workers, bar) -> None:
    """Batches on ``workers`` Python threads, each running torch with one intra-op thread.

    Each core works through its own batches: no OpenMP barrier after every operator, so a
    core held by another process slows its share only instead of stalling every operator.
    The GIL is released inside torch and numpy, which do nearly all the work.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    def task(s2_len, s1_len, pix):
        with torch.inference_mode():
            return one(s2_len, s1_len, pix).numpy()

    with _threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tessera-encoder") as pool:
        todo = iter(chunks)
        running = {}
        try:
            for _ in range(2 * workers):  # a short queue: inputs are built inside the tasks
                c = next(todo, None)
                if c is None:
                    break
                running[pool.submit(task, *c)] = c[2]
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    pix = running.pop(f)
                    out[pix] = f.result()
                    bar.update(pix.size)
                    c = next(todo, None)
                    if c is not None:
                        running[pool.submit(task, *c)] = c[2]
        finally:
            for f in running:
                f.cancel()


def check_dims(model, dims) -> int:
    """The output depth: 128 for ``None``, else ``dims`` if it is a Matryoshka prefix of the model."""
    if dims is None:
        return OUT_DIM
    allowed = tuple(getattr(model, "matryoshka_dims", (OUT_DIM,)))
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)):
        raise EncoderError(f"dims={dims!r} is not a whole number; use one of {allowed}")
    if int(dims) not in allowed:
        raise EncoderError(f"dims={dims} is not a usable prefix of this model; choose one of {allowed}")
    return int(dims)


def _run(forward, s2_x: np.ndarray, s1_x: np.ndarray, dev: torch.device, dtype) -> torch.Tensor:
    x2, x1 = torch.from_numpy(s2_x), torch.from_numpy(s1_x)
    if dev.type == "cuda":
        x2 = x2.pin_memory().to(dev, non_blocking=True)
        x1 = x1.pin_memory().to(dev, non_blocking=True)
    elif dev.type != "cpu":
        x2, x1 = x2.to(dev), x1.to(dev)
    ctx = torch.autocast(device_type=dev.type, dtype=dtype) if dtype is not None else nullcontext()
    with ctx:
        y = forward(x2, x1)
    return y.float()


def _collect(out: np.ndarray, pix: np.ndarray, host: torch.Tensor, event) -> None:
    event.synchronize()
    out[pix] = host.numpy()
