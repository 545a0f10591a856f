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
#: Pixels per piece of the v2 CPU path (its pooled vectors: 16 k x 2 x 256 floats = 32 MiB).
_SERIES_PIXELS = 16_384
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
        Show a tqdm bar over pixels (v2 on CPU: over each pixel's S2 and S1 series).

    A pixel without any valid observation in either sensor gets NaN; a sensor without
    valid observations is fed all-zero rows (day 0), as the reference does.

    A v2 student on CPU encodes each sensor's series from its distinct time steps: the
    steps that pad a sequence to its bucket repeat others, and enter attention and
    pooling as log-count weights instead of being computed again.  The result equals the
    bucketed sequences' to float rounding (``docs/design/encoder.md``); v1.x, CUDA and
    ``compile=True`` run the bucketed sequences.
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
    # v2 on CPU: each sensor's series from its distinct steps (equal to float rounding,
    # fewer tokens); the bucketed path elsewhere (GPU batches, compile, v1.x's GRU)
    series = generation == "v2" and dev.type == "cpu" and not compile and not _padded_only(model)
    plan = [] if series else inputs.plan(generation, sel)
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

    if series:
        _embed_series(model, inputs, sel, source, out, dev=dev, batch_size=batch_size, workers=workers,
                      num_threads=num_threads, progress=progress)
    else:
        chunks = []
        for s2_len, s1_len, group in plan:
            bs = batch_size or default_batch_size(model, s2_len, s1_len, dev)
            chunks.extend((s2_len, s1_len, group[i : i + bs]) for i in range(0, group.size, bs))

        def store(chunk, result):
            out[chunk[2]] = result

        bar = tqdm(total=total, unit="px", desc=f"TESSERA {generation}", disable=not progress, smoothing=0.1)
        with bar:
            if workers > 1:
                _embed_parallel(lambda c: one(*c).numpy(), chunks, store, workers, bar, size=lambda c: c[2].size)
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


def _padded_only(model) -> bool:
    """Whether the model cannot take repeated steps as counts (a pooling other than v2's)."""
    from .model import _AttentionPool

    return not all(isinstance(getattr(b, "attn_pool", None), _AttentionPool)
                   for b in (getattr(model, "s2_backbone", None), getattr(model, "s1_backbone", None)))


def _embed_series(model, inputs, sel, source, out, *, dev, batch_size, workers, num_threads, progress) -> None:
    """v2: encode each sensor's series from its distinct steps, grouped by exact count,
    then fuse the pooled vectors (``TesseraEncoder.fuse``) into ``out``.

    Pixels with the same number ``n`` of valid observations share the resampling pattern,
    hence the distinct steps and their counts (:func:`~.preprocess.distinct_steps`); the
    counts enter attention and pooling as log-biases, so the result equals the bucketed
    sequence's to float rounding while each repeated step is computed once.  A sensor
    without valid observations has one pooled vector (that of a zero row, day 0), shared.
    """
    from tqdm.auto import tqdm

    from .preprocess import distinct_steps

    rows = inputs.with_data(sel)
    if not rows.size:
        return
    width = int(model.s2_backbone.d_model)
    budget = _TOKENS_CPU * 256 // max(width, 1)
    zero = {}
    with torch.inference_mode():
        for sensor, bands in (("s2", 10), ("s1", 2)):
            backbone = getattr(model, f"{sensor}_backbone")
            zero[sensor] = backbone(torch.zeros((1, 1, bands + 1), dtype=torch.float32, device=dev))[0].numpy()

    def run(task):
        sensor, n, pix, lc = task
        x = inputs.series_batch(sensor, pix, n, data_source=source)
        with torch.inference_mode():
            return getattr(model, f"{sensor}_backbone")(torch.from_numpy(x), lc).numpy()

    total = int((inputs.n_s2[rows] > 0).sum() + (inputs.n_s1[rows] > 0).sum())
    bar = tqdm(total=total, unit="series", desc="TESSERA v2 (S2 + S1 series)", disable=not progress, smoothing=0.1)
    with bar:
        # pieces of pixels bound the pooled vectors' memory (2 x width floats a pixel)
        for start in range(0, rows.size, _SERIES_PIXELS):
            part, groups = inputs.series_plan(rows[start : start + _SERIES_PIXELS])
            tasks = []
            for sensor, n, pix in groups:
                steps, log_counts = distinct_steps(n)
                bs = batch_size or int(np.clip(budget // steps.size, 8, 65_536))
                lc = None if log_counts is None else torch.from_numpy(log_counts.copy())
                tasks.extend((sensor, n, pix[i : i + bs], lc) for i in range(0, pix.size, bs))
            # most tokens first: the last tasks are small, so no core waits long for the other at the end
            tasks.sort(key=lambda t: -t[2].size * distinct_steps(t[1])[0].size)
            where = np.full(inputs.n_pixels, -1, dtype=np.int64)
            where[part] = np.arange(part.size)
            # rows without a sensor keep the pooled vector of its zero row
            pooled = {k: np.broadcast_to(v, (part.size, width)).copy() for k, v in zero.items()}

            def store(task, result, pooled=pooled, where=where):
                pooled[task[0]][where[task[2]]] = result

            if workers > 1:
                _embed_parallel(run, tasks, store, workers, bar, size=lambda t: t[2].size)
            else:
                with _threads(num_threads):
                    for t in tasks:
                        store(t, run(t))
                        bar.update(t[2].size)
            step = 8_192
            with _threads(num_threads), torch.inference_mode():
                for i in range(0, part.size, step):
                    p2 = torch.from_numpy(pooled["s2"][i : i + step])
                    p1 = torch.from_numpy(pooled["s1"][i : i + step])
                    out[part[i : i + step]] = model.fuse(p2, p1).numpy()


def _embed_parallel(run, tasks, store, workers, bar, *, size) -> None:
    """Tasks on ``workers`` Python threads, each running torch with one intra-op thread;
    ``store(task, run(task))`` on the calling thread as each finishes.

    Each core works through its own batches: no OpenMP barrier after every operator, so a
    core held by another process slows its share only instead of stalling every operator.
    The GIL is released inside torch and numpy, which do nearly all the work.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    def task(c):
        with torch.inference_mode():  # a per-thread mode: set in the worker itself
            return run(c)

    with _threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tessera-encoder") as pool:
        todo = iter(tasks)
        running = {}
        try:
            for _ in range(2 * workers):  # a short queue: inputs are built inside the tasks
                c = next(todo, None)
                if c is None:
                    break
                running[pool.submit(task, c)] = c
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    c = running.pop(f)
                    store(c, f.result())
                    bar.update(size(c))
                    c = next(todo, None)
                    if c is not None:
                        running[pool.submit(task, c)] = c
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
