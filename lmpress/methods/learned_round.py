"""Learned rounding: signed-gradient descent on rounding offsets and clipping ranges.

The parameterisation is AutoRound's (Cheng et al., 2023, "Optimize Weight
Rounding via Signed Gradient Descent"): every weight gets an offset ``v`` added
before rounding, every group factors on its range, and all are moved by the
sign of their gradient (straight-through rounding) with a step that decays
linearly from ``lr``.

Two objectives:

- ``objective="block"`` (default, AutoRound's): :func:`refine_block`, run by the
  pipeline once all linears of a decoder block hold their first solution
  (GPTQ's by default, round-to-nearest with ``init="rtn"``). The block's output on the
  inputs coming from the already-quantized blocks is fitted, by mean squared error,
  to the float block's output on the float model's own inputs, so each block can
  also absorb what the blocks before it got wrong. Each step is one forward and
  backward pass of the block over ``batch`` calibration samples. With
  ``rounding="div"`` the additive offsets give way to FlexRound's element-wise
  division (see :class:`_Rounding`).
- ``objective="layer"``: each linear alone against the Hessian form of its output
  error, ``tr(dW H dW^T)``: one ``[out, in] x [in, in]`` product per step, no
  forward passes. It lowers RTN's output error but not to GPTQ's: a layer-wise sign
  descent does not find what GPTQ's error feedback finds (BENCHMARKS.md,
  ``learned-round:layer``).

Both keep the start when the learned solution is not better by their objective.
"""

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from lmpress.errors import LmpressError
from lmpress.formats.affine import expand_to_columns, group_view
from lmpress.formats.scheme import Scheme
from lmpress.methods.base import BlockLayer, Needs, QuantResult, register_method
from lmpress.methods.gptq import gptq
from lmpress.methods.rtn import rtn
from lmpress.packing.packed import PackedWeight
from lmpress.transforms.base import Batch, block_output, select_samples

# how far inside a code's rounding interval a start offset puts its weight (in steps)
_MARGIN = 0.01
# calibration samples on which a block's learned rounding is compared with its start
_CHECK_SAMPLES = 32
# FlexRound's log divisors stay within exp(+-_LOG_DIV)
_LOG_DIV = 0.5


# the format operations learned rounding goes through; its offsets and range factors
# act on w / s + z, so the format must decode affinely
FORMAT_OPS = (
    "affine",
    "choose_params",
    "encode",
    "decode",
    "encode_ste",
    "params_from_range",
    "round_params",
    "storable_params",
)


class _Rounding:
    """Learnable rounding of one linear around its start solution.

    ``dequant = (clamp(round(w / s + z + v), 0, qmax) - z) * s`` with per-weight
    offsets ``v [out, in]``, per-group scale factors ``a`` (``s = s0 * a``) and, for
    asymmetric schemes, zero shifts ``b`` (``z = z0 + b``, rounded unless zeros are
    float). ``v`` starts as the smallest offset that reproduces the start's codes
    and may move half a step beyond that in either direction.

    ``rounding="div"`` is FlexRound's division instead (Lee et al., ICML 2023,
    "FlexRound: Learnable Rounding based on Element-wise Division"): the weight is
    divided by ``exp(d + r + c)`` before rounding, with learned log factors per weight
    ``d [out, in]``, per row ``r [out, 1]`` and per column ``c [1, in]``, so a weight's
    rounding moves in proportion to its size; ``v`` then stays at its start value.
    """

    def __init__(self, layer: BlockLayer, min_clip: float, rounding: str = "add"):
        p = layer.start
        self.scheme = p.scheme
        self.fmt = p.scheme.fmt
        self.w = layer.weight
        start = p.params()
        self.s0 = start["scale"]
        self.z0 = start["zero"]
        cols = self.w.shape[1]
        s = expand_to_columns(self.s0, cols, self.scheme)
        z = expand_to_columns(self.z0, cols, self.scheme)
        x = self.w / s + z
        q0 = p.codes().float()
        # The smallest offset that reproduces the start's codes: none where they are
        # round-to-nearest, else to just inside the start code's rounding interval, so
        # that as with AutoRound's v = 0 a few steps can flip a code either way.
        inside = torch.clamp(x, q0 - 0.5 + _MARGIN, q0 + 0.5 - _MARGIN)
        nearest = self.fmt.encode(self.w, {"scale": s, "zero": z})
        v0 = torch.where(nearest == q0, 0.0, inside - x)
        self.v_lo = torch.minimum(v0, torch.full_like(v0, -0.5))
        self.v_hi = torch.maximum(v0, torch.full_like(v0, 0.5))
        self.div = rounding == "div"
        self.v = v0.clone().requires_grad_(not self.div)
        self.a = torch.ones_like(self.s0, requires_grad=True)
        self.b = torch.zeros_like(self.z0, requires_grad=not self.scheme.symmetric)
        self.bounds = [(self.a, min_clip, 2.0 - min_clip)]
        if self.div:
            rows = self.w.shape[0]
            self.d = torch.zeros_like(self.w, requires_grad=True)
            self.r = torch.zeros(rows, 1, requires_grad=True)
            self.c = torch.zeros(1, cols, requires_grad=True)
            self.bounds += [(t, -_LOG_DIV, _LOG_DIV) for t in (self.d, self.r, self.c)]
        else:
            self.bounds.append((self.v, self.v_lo, self.v_hi))
        if not self.scheme.symmetric:
            self.bounds.append((self.b, -1.0, 1.0))

    def _divided(self) -> torch.Tensor:
        return self.w / torch.exp(self.d + self.r + self.c) if self.div else self.w

    def dequant(self) -> torch.Tensor:
        """The weight ``[out, in]`` under the current parameters (differentiable)."""
        grid = self.fmt.round_params({"scale": self.s0 * self.a, "zero": self.z0 + self.b}, True)
        cols = self.fmt.expand(grid, self.w.shape[1])
        return self.fmt.decode(self.fmt.encode_ste(self._divided(), cols, self.v), cols)

    def step(self, lr: float) -> None:
        with torch.no_grad():
            for p, lo, hi in self.bounds:
                if p.grad is None:
                    continue
                p -= lr * torch.sign(p.grad)
                p.copy_(torch.clamp(p, lo, hi))
                p.grad = None

    @torch.no_grad()
    def packed(self) -> PackedWeight:
        """The current parameters in stored form (fp16/bf16 scales, integer or fp16 zeros)."""
        params = self.fmt.storable_params({"scale": self.s0 * self.a, "zero": self.z0 + self.b})
        codes = self.fmt.encode(self._divided(), self.fmt.expand(params, self.w.shape[1]), self.v)
        return PackedWeight.from_codes(codes, params, self.scheme)


def _block_loss(
    block: nn.Module,
    weights: dict[str, torch.Tensor],
    batches: list[Batch],
    targets: list[torch.Tensor],
) -> float:
    """Mean squared error of the block's outputs with ``weights`` against ``targets``."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch, t in zip(batches, targets, strict=True):
            out = block_output(functional_call(block, weights, (batch[0],), batch[1], strict=False))
            total += float((out - t).square().sum())
            count += t.numel()
    return total / max(count, 1)


def _sign_descent(
    block: nn.Module,
    roundings: list[_Rounding],
    names: list[str],
    batches: list[Batch],
    targets: list[torch.Tensor],
    iters: int,
    lr: float,
    batch: int,
    gen: torch.Generator,
) -> None:
    """``iters`` signed-gradient steps on the block's output error over random mini-batches."""
    with torch.enable_grad():  # the pipeline runs under no_grad
        for it in range(iters):
            j = int(torch.randint(len(batches), (1,), generator=gen))
            size = batches[j][0].shape[0]
            idx = torch.randperm(size, generator=gen)[: min(batch, size)]
            h, kw = select_samples(batches[j], idx)
            weights = {n: r.dequant() for n, r in zip(names, roundings, strict=True)}
            out = block_output(functional_call(block, weights, (h,), kw, strict=False))
            loss = (out - targets[j][idx]).square().mean()
            loss.backward()
            step = lr * (1 - it / iters)
            for r in roundings:
                r.step(step)


def refine_block(
    block: nn.Module,
    layers: list[BlockLayer],
    batches: list[Batch],
    targets: list[torch.Tensor],
    iters: int = 50,
    lr: float = 0.005,
    min_clip: float = 0.5,
    batch: int = 2,
    rounding: str = "add",
    seed: int = 0,
    **_start: Any,
) -> tuple[dict[str, PackedWeight], dict[str, Any]]:
    """AutoRound's block objective: fit the quantized block to the float block's outputs.

    ``batches`` are the block's calibration inputs (hidden states ``[n, seq, d]`` and
    keyword arguments) from the already-quantized blocks before it, ``targets`` the
    float block's outputs ``[n, seq, d]`` on the float model's inputs, batch by batch.
    ``layers`` hold the float weights and start solutions of the linears to refine.
    Each of ``iters`` steps draws ``batch`` samples (seeded) from one calibration
    batch and moves every offset and range factor by ``lr`` (decaying linearly to 0)
    against the sign of its gradient.

    ``_start`` takes the options that chose the start (``objective``, ``init``), which
    :func:`learned_round` reads. Returns the packed weights by layer name (the
    start's when the learned ones do not lower the loss on the first 32 calibration
    samples) and a summary with the block loss before and after on those samples.
    """
    roundings = [_Rounding(layer, min_clip, rounding) for layer in layers]
    names = [f"{layer.name}.weight" for layer in layers]
    start = {n: layer.start.dequantize() for n, layer in zip(names, layers, strict=True)}
    # the keep-or-not decision is made on the first _CHECK_SAMPLES samples: a full pass
    # over every calibration sample would cost a large share of the descent itself
    check, seen = 0, 0
    while check < len(batches) and seen < _CHECK_SAMPLES:
        seen += batches[check][0].shape[0]
        check += 1
    loss_start = _block_loss(block, start, batches[:check], targets[:check])
    gen = torch.Generator().manual_seed(seed)
    # gradients for the rounding parameters only, not for the block's own
    frozen = [p for p in block.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        _sign_descent(block, roundings, names, batches, targets, iters, lr, batch, gen)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    learned = [r.packed() for r in roundings]
    dq = {n: p.dequantize() for n, p in zip(names, learned, strict=True)}
    loss_learned = _block_loss(block, dq, batches[:check], targets[:check])
    keep = loss_learned < loss_start
    chosen = learned if keep else [layer.start for layer in layers]
    summary = {"loss_start": loss_start, "loss_learned": loss_learned, "kept": keep}
    return {layer.name: p for layer, p in zip(layers, chosen, strict=True)}, summary


@register_method(
    "learned-round",
    needs=lambda o: Needs(hessian=True, block_refine=o["objective"] == "block" and o["iters"] > 0),
    format_ops=FORMAT_OPS,
    limits={
        "objective": (lambda v: v in ("block", "layer"), "block or layer"),
        "iters": (lambda v: v >= 0, "iters >= 0"),
        "lr": (lambda v: 0 < v <= 1, "0 < lr <= 1"),
        "min_clip": (lambda v: 0 < v <= 1, "0 < min_clip <= 1"),
        "init": (lambda v: v in ("gptq", "rtn"), "gptq or rtn"),
        "batch": (lambda v: v >= 1, "batch >= 1 (calibration samples per step)"),
        "rounding": (lambda v: v in ("add", "div"), "add (AutoRound) or div (FlexRound)"),
    },
    refine=refine_block,
)
def learned_round(
    w: torch.Tensor,
    scheme: Scheme,
    hessian: torch.Tensor,
    objective: str = "block",
    iters: int = 50,
    lr: float = 0.005,
    min_clip: float = 0.5,
    init: str = "gptq",
    batch: int = 2,
    rounding: str = "add",
) -> QuantResult:
    """Quantize ``w [out, in]`` float32 given ``hessian [in, in]`` float32.

    With ``objective="block"`` this is only the start (RTN or GPTQ codes); the
    pipeline then calls :func:`refine_block` on the whole block. ``batch`` is
    read there.
    """
    if objective == "layer":
        if rounding != "add":
            raise LmpressError(
                "learned-round: rounding=div (FlexRound) needs objective=block; "
                "the layer objective learns additive offsets only"
            )
        return _layer_objective(w, scheme, hessian, iters, lr, min_clip, init)
    return gptq(w, scheme, hessian) if init == "gptq" else rtn(w, scheme)


def _layer_objective(
    w: torch.Tensor,
    scheme: Scheme,
    hessian: torch.Tensor,
    iters: int,
    lr: float,
    min_clip: float,
    init: str,
) -> QuantResult:
    """Sign descent on ``tr(dW H dW^T)`` for ``w [out, in]`` and ``hessian [in, in]`` float32."""
    W = w.detach().to(torch.float32)
    H = hessian.detach().to(torch.float32)
    rows, cols = W.shape
    fmt = scheme.fmt
    g, mask = group_view(W, scheme)
    big = torch.finfo(torch.float32).max
    gmax = torch.where(mask > 0, g, -big).amax(-1, keepdim=True).clamp_min(0)
    gmin = torch.where(mask > 0, g, big).amin(-1, keepdim=True).clamp_max(0)
    a = torch.ones_like(gmax, requires_grad=True)
    b = torch.ones_like(gmin, requires_grad=True)
    v = torch.zeros_like(g)
    if init == "gptq":
        # Offsets that make min-max rounding reproduce GPTQ's codes.
        r = gptq(W, scheme, H, mse=False)
        start = fmt.choose_params(W)
        target, _ = group_view(r.codes, scheme)
        s0, z0 = start["scale"].unsqueeze(-1), start["zero"].unsqueeze(-1)
        v = (target - (g / s0 + z0)).clamp(-0.5, 0.5) * mask
    v.requires_grad_(True)

    def forward():
        p = fmt.params_from_range(gmin * b, gmax * a, ste=True)
        wq = fmt.decode(fmt.encode_ste(g, p, v), p).reshape(g.shape[0], -1)
        if scheme.granularity == "tensor":
            wq = wq.reshape(-1)[: rows * cols]
        return wq.reshape(rows, -1)[:, :cols]

    norm = float(((W @ H) * W).sum().clamp_min(1e-30))
    best = (float("inf"), v.detach().clone(), a.detach().clone(), b.detach().clone())
    with torch.enable_grad():  # the pipeline runs under no_grad
        for it in range(iters + 1):
            wq = forward()
            d = wq - W
            dh = d.detach() @ H
            loss = float((dh * d.detach()).sum()) / norm
            if loss < best[0]:
                best = (loss, v.detach().clone(), a.detach().clone(), b.detach().clone())
            if it == iters:
                break
            wq.backward(2 * dh)  # d/dW of tr(dW H dW^T); the rest is elementwise autograd
            step = lr * (1 - it / iters)
            with torch.no_grad():
                for p, lo, hi in ((v, -0.5, 0.5), (a, min_clip, 1.0), (b, min_clip, 1.0)):
                    p -= step * torch.sign(p.grad)
                    p.clamp_(lo, hi)
                    p.grad = None

    with torch.no_grad():
        v.copy_(best[1])
        a.copy_(best[2])
        b.copy_(best[3])
        p = fmt.params_from_range(gmin * b, gmax * a, ste=True)
        params = fmt.storable_params({k: t.squeeze(-1) for k, t in p.items()})
        q = fmt.encode(g, {k: t.unsqueeze(-1) for k, t in params.items()}, v)
        codes = q.reshape(g.shape[0], -1)
        if scheme.granularity == "tensor":
            codes = codes.reshape(-1)[: rows * cols]
        codes = codes.reshape(rows, -1)[:, :cols]
    return QuantResult(codes, params)
