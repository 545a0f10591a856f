"""The TESSERA encoder in PyTorch, with the published parameter names.

One :class:`ModalityEncoder` per sensor (``s2_backbone`` with 10 bands, ``s1_backbone``
with 2), each: band embedding + day-of-year sinusoids, a post-LayerNorm transformer
stack (plain ``nn.TransformerEncoderLayer`` layout or the v2 QK-norm layout) and a
temporal pooling (attention pooling for v2, GRU-context pooling for v1.0 and v1.1).
:class:`TesseraEncoder` joins the two pooled vectors through ``dim_reducer``.

The forward passes are written for speed (fused attention, the GRU's input projections
done for all steps in one matrix product) but compute exactly the published functions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import DeviceError, EncoderError

__all__ = [
    "ARCHITECTURES",
    "ModalityEncoder",
    "TesseraEncoder",
    "build_encoder",
    "count_parameters",
    "doy_encoding",
    "check_sizes",
    "resolve_device",
]

#: Published sizes per generation (checked against the released checkpoints).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "v1.0": {"latent_dim": 128, "num_layers": 4, "nhead": 4, "dim_feedforward": 4096, "qk_norm": False},
    "v1.1": {"latent_dim": 192, "num_layers": 4, "nhead": 4, "dim_feedforward": 2048, "qk_norm": False},
    "v2": {"latent_dim": 64, "num_layers": 4, "nhead": 4, "dim_feedforward": 1024, "qk_norm": False},
}
OUT_DIM = 128
#: RMSNorm epsilon of the QK-norm layers: ``None`` is ``nn.RMSNorm``'s default (the
#: machine epsilon of the input's dtype), which the reference release uses.
QK_NORM_EPS = None
#: QK-norm layers compute q, k and v in one matrix product (False: three, as published;
#: the results are the same, the switch is for side-by-side timing).
_FUSE_QKV = True


def check_sizes(config: dict[str, Any], *, where: str = "encoder") -> dict[str, Any]:
    """The sizes of ``config`` as clean numbers, or :class:`EncoderError` saying which
    one makes no sense (not a whole number, not positive, heads that do not divide the
    width, matryoshka dimensions that are not increasing prefixes ending at 128)."""
    out = dict(config)
    for key in ("latent_dim", "num_layers", "nhead", "dim_feedforward"):
        v = config.get(key)
        try:
            n = int(v)
            ok = n == v if isinstance(v, float) else not isinstance(v, bool)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok or n <= 0 or n > 1_000_000:
            raise EncoderError(f"{where}: {key}={v!r} is not a positive whole number of sensible size")
        out[key] = n
    if (4 * out["latent_dim"]) % out["nhead"]:
        raise EncoderError(f"{where}: model width {4 * out['latent_dim']} (4 x latent_dim) is not divisible into "
                           f"nhead={out['nhead']} heads")
    if "matryoshka_dims" in config:
        dims = config["matryoshka_dims"]
        try:
            dims = tuple(int(x) for x in dims)
        except (TypeError, ValueError, OverflowError):
            raise EncoderError(f"{where}: matryoshka_dims={config['matryoshka_dims']!r} are not whole numbers") from None
        if not dims or any(b <= a for a, b in zip(dims, dims[1:])) or dims[0] <= 0 or dims[-1] != OUT_DIM:
            raise EncoderError(f"{where}: matryoshka_dims={dims!r} must increase and end at {OUT_DIM}")
        out["matryoshka_dims"] = dims
    out["qk_norm"] = bool(config.get("qk_norm", False))
    return out


def resolve_device(device: Any) -> torch.device:
    """``torch.device(device)``, refused with :class:`DeviceError` when it is not a device
    name or not available on this machine (``"cuda"`` without CUDA, ``"mps"`` without MPS)."""
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, (str, int)) or isinstance(device, bool):
            raise DeviceError(f"device={device!r} is not a device (use 'cpu', 'cuda', 'cuda:1', 'mps')")
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError, TypeError) as err:
            raise DeviceError(f"device={device!r} is not a device name ({err}); use 'cpu', 'cuda' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={device!r}: CUDA is not available here (this PyTorch {torch.__version__} "
                              "has no CUDA or no GPU is visible); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device={device!r}: Apple MPS is not available here; use device='cpu'")
    elif dev.type not in ("cpu", "meta"):
        available = getattr(getattr(torch, dev.type, None), "is_available", None)
        if available is None or not available():
            raise DeviceError(f"device={device!r} is not available here; use device='cpu'")
    return dev


def doy_encoding(doy: torch.Tensor, d: int) -> torch.Tensor:
    """Sinusoids of the raw day of year: ``pe[2k] = sin(doy f_k)``, ``pe[2k+1] = cos(doy f_k)``."""
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32, device=doy.device) * -(math.log(10000.0) / d))
    angle = doy.to(torch.float32).unsqueeze(-1) * freq
    return torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1).flatten(-2)


def _heads(x: torch.Tensor, nhead: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, nhead, d // nhead).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


class _SelfAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (``in_proj_weight``, ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, d: int, nhead: int):
        super().__init__()
        self.nhead = nhead
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        h = self.nhead
        out = F.scaled_dot_product_attention(_heads(q, h), _heads(k, h), _heads(v, h), attn_mask=mask)
        return self.out_proj(_merge(out))


class _PlainLayer(nn.Module):
    """Post-LN encoder layer with ``nn.TransformerEncoderLayer``'s names (ReLU, batch-first)."""

    def __init__(self, d: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = _SelfAttention(d, nhead)
        self.linear1 = nn.Linear(d, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(self.self_attn(x, mask).add_(x))
        return self.norm2(self.linear2(F.relu(self.linear1(x), inplace=True)).add_(x))


class _PlainStack(nn.Module):
    def __init__(self, d: int, nhead: int, dim_feedforward: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(_PlainLayer(d, nhead, dim_feedforward) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class _HeadRMSNorm(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, QK_NORM_EPS)


class _QKNormLayer(nn.Module):
    """v2 QK-norm layer: separate q/k/v projections, per-head RMSNorm on q and k, post-LN."""

    def __init__(self, d: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.nhead = nhead
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.q_norm = _HeadRMSNorm(d // nhead)
        self.k_norm = _HeadRMSNorm(d // nhead)
        self.linear1 = nn.Linear(d, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        h = self.nhead
        # per-head RMSNorm on the (B, T, H, hd) view, then heads first
        if _FUSE_QKV and all(type(m) is nn.Linear for m in (self.q_proj, self.k_proj, self.v_proj)):
            # one product for q, k and v (the dynamic-int8 copy keeps three)
            w = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))
            bias = torch.cat((self.q_proj.bias, self.k_proj.bias, self.v_proj.bias))
            qkv = F.linear(x, w, bias).view(b, t, 3, h, d // h)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2].transpose(1, 2)
        else:
            q, k = self.q_proj(x).view(b, t, h, d // h), self.k_proj(x).view(b, t, h, d // h)
            v = _heads(self.v_proj(x), h)
        a = F.scaled_dot_product_attention(self.q_norm(q).transpose(1, 2), self.k_norm(k).transpose(1, 2), v,
                                           attn_mask=mask)
        x = self.norm1(self.out_proj(_merge(a)).add_(x))
        return self.norm2(self.linear2(F.relu(self.linear1(x), inplace=True)).add_(x))


class _QKNormStack(nn.ModuleList):
    """Keys ``transformer_encoder.{i}.*`` (a plain list of layers)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, mask)
        return x


class _AttentionPool(nn.Module):
    """v2: ``w = softmax_T(query(x))``, output ``sum_T w x``.

    ``log_counts`` (``(T,)``, optional) adds ``log m_t`` to step ``t``'s logit: the pooling
    of a sequence in which step ``t`` occurs ``m_t`` times."""

    def __init__(self, d: int):
        super().__init__()
        self.query = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor, log_counts: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] == 1:
            return x[:, 0]
        logits = self.query(x)
        if log_counts is not None:
            logits = logits + log_counts.view(1, -1, 1)
        w = torch.softmax(logits, dim=1)
        return torch.bmm(w.transpose(1, 2), x)[:, 0]


class _GRUCell(nn.Module):
    """Bias-free input/hidden linears and three bias vectors (the published GRU cell)."""

    def __init__(self, d: int):
        super().__init__()
        for name in ("W_ir", "W_iz", "W_ih", "W_hr", "W_hz", "W_hh"):
            setattr(self, name, nn.Linear(d, d, bias=False))
        self.b_r = nn.Parameter(torch.zeros(d))
        self.b_z = nn.Parameter(torch.zeros(d))
        self.b_h = nn.Parameter(torch.zeros(d))


class _GRU(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.gru_cell = _GRUCell(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(B, T, d)`` of the GRU run from ``h0 = 0``."""
        c = self.gru_cell
        d = x.shape[-1]
        w_in = torch.cat((c.W_ir.weight, c.W_iz.weight, c.W_ih.weight))
        b_in = torch.cat((c.b_r, c.b_z, c.b_h))
        gi = F.linear(x, w_in, b_in)  # all input projections (and biases) in one product
        w_rz = torch.cat((c.W_hr.weight, c.W_hz.weight))
        states = []
        # step 0 with h = 0: the hidden products vanish
        z = torch.sigmoid(gi[:, 0, d : 2 * d])
        h = z * torch.tanh(gi[:, 0, 2 * d :])
        states.append(h)
        for t in range(1, x.shape[1]):
            g = gi[:, t]
            rz = torch.sigmoid(g[:, : 2 * d] + F.linear(h, w_rz))
            r, z = rz[:, :d], rz[:, d:]
            n = torch.tanh(g[:, 2 * d :] + F.linear(r * h, c.W_hh.weight))
            h = (1 - z) * h + z * n
            states.append(h)
        return torch.stack(states, dim=1)


class _GRUContextPool(nn.Module):
    """v1.0 / v1.1: softmax weights from ``query(LayerNorm(GRU states))`` applied to ``x``."""

    def __init__(self, d: int):
        super().__init__()
        self.temporal_context = _GRU(d)
        self.layer_norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor, log_counts: torch.Tensor | None = None) -> torch.Tensor:
        if log_counts is not None:
            raise EncoderError("GRU-context pooling depends on the order of the steps: repeated steps cannot be "
                               "folded into counts")
        if x.shape[1] == 1:
            return x[:, 0]
        ctx = self.layer_norm(self.temporal_context(x))
        w = torch.softmax(self.query(ctx), dim=1)
        return (w * x).sum(dim=1)


class ModalityEncoder(nn.Module):
    """One sensor's encoder: ``(B, T, C + 1)`` (bands + raw day of year) -> ``(B, 4L)``."""

    def __init__(
        self,
        bands: int,
        latent_dim: int,
        *,
        num_layers: int,
        nhead: int,
        dim_feedforward: int,
        qk_norm: bool = False,
        pooling: str = "attention",
    ):
        super().__init__()
        d = 4 * latent_dim
        if d % nhead:
            raise EncoderError(f"model width {d} is not divisible into {nhead} heads")
        self.bands = bands
        self.d_model = d
        self.embedding = nn.Sequential(nn.Linear(bands, d), nn.ReLU(), nn.Linear(d, d))
        if qk_norm:
            self.transformer_encoder = _QKNormStack(_QKNormLayer(d, nhead, dim_feedforward) for _ in range(num_layers))
        else:
            self.transformer_encoder = _PlainStack(d, nhead, dim_feedforward, num_layers)
        if pooling == "attention":
            self.attn_pool = _AttentionPool(d)
        elif pooling == "gru":
            self.attn_pool = _GRUContextPool(d)
        else:
            raise EncoderError(f"unknown pooling {pooling!r}")

    def forward(self, x: torch.Tensor, log_counts: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled ``(B, d)``.  ``log_counts`` (``(T,)``, attention pooling only) gives the
        log-multiplicity of each step: the result equals, to float rounding, that of the
        sequence in which step ``t`` is repeated ``exp(log_counts[t])`` times.  Without
        positional terms other than the day of year (carried by the step itself) the
        layers are permutation-equivariant, so a repeated step has the same value as its
        original in every layer and counts once in the computation, weighted ``m_t`` in
        the softmaxes of attention and pooling."""
        bands, doy = x[..., :-1], x[..., -1]
        h = self.embedding(bands) + doy_encoding(doy, self.d_model).to(x.dtype)
        mask = None
        if log_counts is not None:  # the GRU-context pooling refuses them (it reads the order)
            log_counts = log_counts.to(device=h.device, dtype=h.dtype)
            mask = log_counts.view(1, 1, 1, -1)
        return self.attn_pool(self.transformer_encoder(h, mask), log_counts)


class TesseraEncoder(nn.Module):
    """Both modality encoders and ``dim_reducer``: ``forward(s2_x, s1_x) -> (B, 128)``.

    ``s2_x`` is ``(B, T2, 11)`` and ``s1_x`` ``(B, T1, 3)``: standardised bands and the
    raw day of year in the last column (see :mod:`tessera_explore.encoder.preprocess`).
    Attributes ``generation`` (``"v1.0"``, ``"v1.1"``, ``"v2"``), ``data_source`` (v1.1),
    ``config`` (the sizes) and ``name`` describe the model.
    """

    def __init__(self, generation: str, config: dict[str, Any], *, data_source: str | None = None, name: str = ""):
        super().__init__()
        if generation not in ARCHITECTURES:
            raise EncoderError(f"unknown model generation {generation!r}")
        self.generation = generation
        self.data_source = data_source
        self.name = name or f"tessera-{generation}"
        config = check_sizes(config, where=f"{generation} encoder {name}".strip())
        self.config = dict(config)
        L = int(config["latent_dim"])
        kw = dict(
            num_layers=int(config["num_layers"]),
            nhead=int(config["nhead"]),
            dim_feedforward=int(config["dim_feedforward"]),
            qk_norm=bool(config.get("qk_norm", False)),
            pooling="attention" if generation == "v2" else "gru",
        )
        self.s2_backbone = ModalityEncoder(10, L, **kw)
        self.s1_backbone = ModalityEncoder(2, L, **kw)
        if generation == "v1.0":
            self.dim_reducer = nn.Sequential(nn.Linear(8 * L, OUT_DIM))
        else:
            final = OUT_DIM if generation == "v2" else 192
            layers = [nn.Linear(8 * L, 16 * L), nn.LayerNorm(16 * L), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16 * L, final)]
            if generation == "v2":
                layers.append(nn.LayerNorm(OUT_DIM, elementwise_affine=False))
            self.dim_reducer = nn.Sequential(*layers)

    def forward(self, s2_x: torch.Tensor, s1_x: torch.Tensor) -> torch.Tensor:
        if s2_x.ndim != 3 or s2_x.shape[-1] != 11:
            raise EncoderError(f"s2_x must be (B, T, 11) (10 standardised bands + day of year), got {tuple(s2_x.shape)}")
        if s1_x.ndim != 3 or s1_x.shape[-1] != 3:
            raise EncoderError(f"s1_x must be (B, T, 3) (VV, VH standardised + day of year), got {tuple(s1_x.shape)}")
        if s2_x.shape[0] != s1_x.shape[0]:
            raise EncoderError(f"s2_x has {s2_x.shape[0]} pixels but s1_x has {s1_x.shape[0]}")
        return self.fuse(self.s2_backbone(s2_x), self.s1_backbone(s1_x))

    def fuse(self, s2_pooled: torch.Tensor, s1_pooled: torch.Tensor) -> torch.Tensor:
        """``dim_reducer`` over the concatenated pooled vectors (S2 first): ``(B, 128)``."""
        return self.dim_reducer(torch.cat((s2_pooled, s1_pooled), dim=-1))[:, :OUT_DIM]

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        """Prefix lengths usable alone (v2), else just 128."""
        return tuple(self.config.get("matryoshka_dims", (OUT_DIM,)))

    def extra_repr(self) -> str:
        return f"generation={self.generation!r}, data_source={self.data_source!r}, name={self.name!r}"


def build_encoder(generation: str, *, data_source: str | None = None, name: str = "", **sizes: Any) -> TesseraEncoder:
    """A randomly initialised encoder of ``generation``; ``sizes`` override the published ones
    (``latent_dim``, ``num_layers``, ``nhead``, ``dim_feedforward``, ``qk_norm``, ``matryoshka_dims``)."""
    if generation not in ARCHITECTURES:
        raise EncoderError(f"unknown model generation {generation!r}; expected one of {tuple(ARCHITECTURES)}")
    config = {**ARCHITECTURES[generation], **sizes}
    if generation == "v2":
        config.setdefault("matryoshka_dims", (16, 32, 64, 128))
    model = TesseraEncoder(generation, config, data_source=data_source, name=name)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (the cheap first check against the published counts)."""
    return sum(p.numel() for p in model.parameters())
