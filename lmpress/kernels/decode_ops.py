"""Typed wrappers of the C decode step (``decode_ops.c``) and the linears it runs.

The C side reads raw pointers, so every wrapper here checks what it is given
(CPU, float32 unless stated, contiguous, the shapes in its docstring) and raises
``ValueError`` otherwise: a wrong tensor would be read out of bounds, not refused.
The checks cost microseconds against a decode step's milliseconds.

- :func:`rmsnorm`, :func:`rope_`, :func:`attend`, :func:`silu_mul`: the small float32
  operations of one block, one call each;
- :func:`packed_linear`, :func:`lut_linear`, :func:`grid_linear`, :func:`dense_linear`: a
  linear layer prepared for the decode step (:class:`DecodeLinear`);
- :class:`DecodeStep`: one token through every block in one C call.

All of them need the built extension (:func:`available`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import torch

from lmpress.kernels import cpu as _cpu_kernel
from lmpress.kernels.cpu import CpuState
from lmpress.kernels.grid import GridState
from lmpress.kernels.lut import LutState


def available() -> bool:
    """Whether the C decode step is built here."""
    return _cpu_kernel._cpu is not None and hasattr(_cpu_kernel._cpu, "decode_step")


def _ext() -> ModuleType:
    # Looked up at each call, not bound at import: tests (and a failed build) set
    # lmpress.kernels.cpu._cpu to None, and every reader must then see the same.
    ext = _cpu_kernel._cpu
    if ext is None:
        raise RuntimeError("lmpress's C kernels are not built here (pip install -e .)")
    return ext


def _check(t: torch.Tensor, name: str, numel: int | None = None, dtype=torch.float32) -> None:
    if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(
            f"{name} must be a contiguous CPU {dtype} tensor, got {t.dtype} on {t.device}"
            + ("" if t.is_contiguous() else " (not contiguous)")
        )
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name} must hold {numel} values, got shape {tuple(t.shape)}")


def _threads(threads: int | None) -> int:
    return torch.get_num_threads() if threads is None else max(int(threads), 1)


# ---------------------------------------------------------------- block operations


def rmsnorm(
    x: torch.Tensor, w: torch.Tensor, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """RMSNorm over the last dimension: ``x [..., n]`` float32, ``w [n]`` float32 ->
    ``x * rsqrt(mean(x^2) + eps) * w``, float32 of ``x``'s shape (into ``out`` when
    given; ``out`` may be ``x`` itself)."""
    n = w.numel()
    _check(x, "x")
    _check(w, "w")
    if x.dim() == 0 or x.shape[-1] != n:
        raise ValueError(f"x's last dimension must be {n} (the norm's width), got {tuple(x.shape)}")
    if out is None:
        out = torch.empty_like(x)
    else:
        _check(out, "out", x.numel())
    _ext().rmsnorm(x.data_ptr(), w.data_ptr(), out.data_ptr(), x.numel() // n, n, float(eps))
    return out


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of one position, in place: ``x [heads, hd]`` float32 becomes
    ``x * cos + rotate_half(x) * sin`` (``rotate_half`` as in transformers' Llama);
    ``cos, sin [hd]`` float32, that position's rows of the model's tables. Returns ``x``."""
    if x.dim() != 2:
        raise ValueError(f"x must be [heads, head_dim], got {tuple(x.shape)}")
    heads, hd = x.shape
    _check(x, "x")
    _check(cos, "cos", hd)
    _check(sin, "sin", hd)
    _ext().rope(x.data_ptr(), cos.data_ptr(), sin.data_ptr(), heads, hd)
    return x


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: int, scale: float
) -> torch.Tensor:
    """Softmax attention of one query position over a KV cache.

    ``q [n_head, hd]`` float32; ``k, v [n_kv, max_len, hd]`` float32 of which the first
    ``length`` positions are read (``1 <= length <= max_len``); query head ``h`` reads KV
    head ``h // (n_head // n_kv)``. Returns ``[n_head, hd]`` float32."""
    if q.dim() != 2 or k.dim() != 3 or v.shape != k.shape or k.shape[2] != q.shape[1]:
        raise ValueError(
            "q must be [n_head, hd] and k, v [n_kv, max_len, hd], got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    n_head, hd = q.shape
    n_kv, max_len, _ = k.shape
    if n_head % n_kv or not 1 <= length <= max_len:
        raise ValueError(f"need n_head % n_kv == 0 and 1 <= length <= {max_len}")
    for t, name in ((q, "q"), (k, "k"), (v, "v")):
        _check(t, name)
    out = torch.empty(n_head, hd)
    _ext().attend(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
        n_head, n_kv, hd, length, max_len, float(scale),
    )  # fmt: skip
    return out


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """A gated MLP's activation: ``gu [2n]`` float32 (gate, then up) -> ``silu(gate) * up``
    ``[n]`` float32."""
    _check(gu, "gu")
    if gu.dim() != 1 or gu.numel() % 2:
        raise ValueError(f"gu must be [2n] (gate then up), got {tuple(gu.shape)}")
    n = gu.numel() // 2
    out = torch.empty(n)
    _ext().silu_mul(gu.data_ptr(), out.data_ptr(), n)
    return out


# ---------------------------------------------------------------- linear layers


@dataclass(frozen=True, eq=False)  # holds tensors: identity, not values
class DecodeLinear:
    """A linear layer prepared for :class:`DecodeStep`: ``y [out] = W x [in] + bias``.

    ``capsule`` is the C object (it holds pointers into ``keep``, which this object keeps
    alive); only :class:`DecodeStep` reads it."""

    capsule: object
    in_features: int
    out_features: int
    keep: tuple[torch.Tensor | None, ...]


def _bias(bias: torch.Tensor | None, n: int) -> int:
    if bias is None:
        return 0
    _check(bias, "bias", n)
    return bias.data_ptr()


def packed_linear(st: CpuState, bias: torch.Tensor | None = None) -> DecodeLinear:
    """The FMA kernel's product on packed codes (``st`` from ``CpuKernel.prepare``);
    ``bias [out]`` float32 or None."""
    b = _bias(bias, st.out_features)
    cap = _ext().packed_linear(*st.args(0, 0, 0, b))
    keep = (st.qweight, st.scales, st.zeros, bias)
    return DecodeLinear(cap, st.in_features, st.out_features, keep)


def lut_linear(lt: LutState, bias: torch.Tensor | None = None) -> DecodeLinear:
    """The table-lookup product (``lt`` from ``lut_layout``; AVX-512 only);
    ``bias [out]`` float32 or None."""
    b = _bias(bias, lt.n)
    cap = _ext().lut_linear(
        b, lt.codes.data_ptr(), lt.scales.data_ptr(), lt.zeros.data_ptr(),
        lt.n, lt.k, lt.k8, lt.group_len, lt.groups, lt.bits,
    )  # fmt: skip
    return DecodeLinear(cap, lt.k, lt.n, (lt.codes, lt.scales, lt.zeros, bias))


def grid_linear(st: GridState, bias: torch.Tensor | None = None) -> DecodeLinear:
    """The table-lookup product of a grid format's codes (``st`` from ``CpuKernel.prepare``);
    ``bias [out]`` float32 or None."""
    b = _bias(bias, st.out_features)
    cap = st.linear(bias if b else None)
    keep = (st.codes, st.tables, st.planes, st.index, st.scales, st.scale_codes, st.scale_table)
    return DecodeLinear(cap, st.in_features, st.out_features, (*keep, bias))


def dense_linear(w: torch.Tensor, bias: torch.Tensor | None = None) -> DecodeLinear:
    """A float product: ``w [out, in]`` float32, or bfloat16 (read as its 16-bit words);
    ``bias [out]`` float32 or None."""
    if w.dim() != 2:
        raise ValueError(f"w must be [out, in], got {tuple(w.shape)}")
    _check(w, "w", dtype=torch.bfloat16 if w.dtype == torch.bfloat16 else torch.float32)
    n, k = w.shape
    b = _bias(bias, n)
    cap = _ext().dense_linear(w.data_ptr(), n, k, b, int(w.dtype == torch.bfloat16))
    return DecodeLinear(cap, k, n, (w, bias))


# ---------------------------------------------------------------- the step


@dataclass(frozen=True, eq=False)  # holds tensors: identity, not values
class DecodeBlock:
    """One Llama-style block for :class:`DecodeStep` (all float32).

    Norm weights ``[hidden]``; ``qkv``: q, k, v rows concatenated (``hidden ->
    (n_head + 2 n_kv) hd``); ``attn_out``: ``n_head hd -> hidden``; ``gate_up``: gate and
    up rows concatenated (``hidden -> 2 inter``); ``down``: ``inter -> hidden``; the KV
    caches ``[n_kv, max_len, hd]``; per-head norms ``[hd]`` (Qwen3) or None."""

    attn_norm: torch.Tensor
    mlp_norm: torch.Tensor
    qkv: DecodeLinear
    attn_out: DecodeLinear
    gate_up: DecodeLinear
    down: DecodeLinear
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None


@dataclass(frozen=True)
class DecodeDims:
    """The sizes every block of a model shares."""

    hidden: int
    n_head: int
    n_kv: int
    head_dim: int
    inter: int
    max_len: int


class DecodeStep:
    """One token through every block of a model in one C call, residual stream in place.

    Each block: ``h = rmsnorm(x)``; q, k, v from ``h`` (per-head norms, rotary embedding);
    k, v written to the caches at the position; attention over positions ``0..pos``;
    ``x += attn_out(att)``; ``x += down(silu(gate(h')) * up(h'))`` with
    ``h' = rmsnorm(x)``. The blocks' pointers and work buffers are gathered once here,
    because the per-token call is what a decode step pays for.
    """

    def __init__(
        self, blocks: Sequence[DecodeBlock], dims: DecodeDims, eps: float, scale: float
    ) -> None:
        """``eps``: the norms' epsilon; ``scale``: the attention logits' factor
        (``head_dim ** -0.5`` for Llama)."""
        d = dims
        if d.n_kv <= 0 or d.n_head % d.n_kv:
            raise ValueError(f"n_head ({d.n_head}) must be a multiple of n_kv ({d.n_kv})")
        q_out = (d.n_head + 2 * d.n_kv) * d.head_dim
        shapes = {
            "qkv": (d.hidden, q_out),
            "attn_out": (d.n_head * d.head_dim, d.hidden),
            "gate_up": (d.hidden, 2 * d.inter),
            "down": (d.inter, d.hidden),
        }
        cache = d.n_kv * d.max_len * d.head_dim
        packed = []
        for i, b in enumerate(blocks):
            for name, (k, n) in shapes.items():
                lin: DecodeLinear = getattr(b, name)
                if (lin.in_features, lin.out_features) != (k, n):
                    raise ValueError(
                        f"block {i}: {name} must map {k} -> {n}, "
                        f"got {lin.in_features} -> {lin.out_features}"
                    )
            _check(b.attn_norm, f"block {i} attn_norm", d.hidden)
            _check(b.mlp_norm, f"block {i} mlp_norm", d.hidden)
            _check(b.k_cache, f"block {i} k_cache", cache)
            _check(b.v_cache, f"block {i} v_cache", cache)
            for w, name in ((b.q_norm, "q_norm"), (b.k_norm, "k_norm")):
                if w is not None:
                    _check(w, f"block {i} {name}", d.head_dim)
            packed.append(
                (
                    b.attn_norm.data_ptr(),
                    b.mlp_norm.data_ptr(),
                    b.qkv.capsule,
                    b.attn_out.capsule,
                    b.gate_up.capsule,
                    b.down.capsule,
                    b.k_cache.data_ptr(),
                    b.v_cache.data_ptr(),
                    0 if b.q_norm is None else b.q_norm.data_ptr(),
                    0 if b.k_norm is None else b.k_norm.data_ptr(),
                )
            )
        self.blocks = tuple(blocks)  # keeps every tensor the C step reads alive
        self.dims = d
        self.eps = float(eps)
        self.scale = float(scale)
        self._packed = tuple(packed)
        self._dims = (d.hidden, d.n_head, d.n_kv, d.head_dim, d.inter, d.max_len)
        scratch = [d.hidden, q_out, d.n_head * d.head_dim, 2 * d.inter, d.inter]
        self._scratch = [torch.empty(n) for n in scratch]
        self._scratch_ptrs = tuple(t.data_ptr() for t in self._scratch)

    def __call__(
        self,
        x: torch.Tensor,
        pos: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        threads: int | None = None,
    ) -> None:
        """``x [hidden]`` float32 (the token's embedding) through every block at
        position ``pos`` (``0 <= pos < max_len``), in place; ``cos, sin [head_dim]``
        float32: the rotary tables' rows at ``pos``. Writes k and v at ``pos``."""
        d = self.dims
        _check(x, "x", d.hidden)
        _check(cos, "cos", d.head_dim)
        _check(sin, "sin", d.head_dim)
        if not 0 <= pos < d.max_len:
            raise ValueError(f"position {pos} outside the cache (0..{d.max_len - 1})")
        _ext().decode_step(
            self._packed, x.data_ptr(), pos, cos.data_ptr(), sin.data_ptr(),
            self._scratch_ptrs, self._dims, self.eps, self.scale, _threads(threads),
        )  # fmt: skip
