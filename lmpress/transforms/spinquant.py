"""SpinQuant-style learned rotation of the residual stream (Liu et al., 2024).

QuaRot's random Hadamard rotation is one of many that keep the float function; some
rotations leave the *quantized* model much closer to the float one than others.
SpinQuant learns the residual rotation ``Q`` (their ``R1``) by minimising the
quantized model's next-token loss on calibration text, with weights and activations
fake-quantized as planned (straight-through gradients), over the orthogonal matrices:
each step moves ``Q`` along the Stiefel manifold by the Cayley transform (Wen & Yin,
2013),

    A = G Q^T - Q G^T,   Q <- (I + lr/2 A)^-1 (I - lr/2 A) Q,

with ``G`` the loss gradient in ``Q``, which keeps ``Q`` orthogonal. It starts from
the randomized Hadamard rotation; everything else (norm folding, value heads, the
online ``down_proj`` rotation) is QuaRot's (:mod:`lmpress.transforms.quarot`). The
learned ``Q`` has no seed to rebuild it from, so a tied head's online rotation stores
it whole (one ``[d, d]`` float32 matrix).

Differences from the paper, by choice: only ``R1`` is learned (the value-head
rotation stays a Hadamard one), the KV cache is not quantized during training, and
the weights' ranges are min-max within the loop (GPTQ, if planned, runs after).
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from lmpress.errors import LmpressError
from lmpress.formats.activation import quantize_activation
from lmpress.formats.scheme import Scheme
from lmpress.transforms.base import register_transform
from lmpress.transforms.quarot import (
    _probe_logits,
    _rotatable,
    check_function,
    prepare_rotation,
    randomized_hadamard,
    rotate_residual,
    stream_readers_writers,
)
from lmpress.transforms.rotation import InputRotation


def _ste_weight(w: torch.Tensor, scheme: Scheme | None) -> torch.Tensor:
    """``w [out, in]`` fake-quantized by ``scheme`` (min-max), gradient straight through."""
    if scheme is None:
        return w
    fmt = scheme.fmt
    with torch.no_grad():
        q = fmt.fake_quantize(w.detach(), fmt.choose_params(w.detach()))
    return w + (q - w).detach()


def cayley_step(q: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    """One Cayley descent step of the orthogonal ``q [d, d]`` along the loss gradient
    ``grad [d, d]`` (float32 or float64); the result is orthogonal."""
    a = grad @ q.T - q @ grad.T
    eye = torch.eye(q.shape[0], dtype=q.dtype, device=q.device)
    return torch.linalg.solve(eye + (lr / 2) * a, (eye - (lr / 2) * a) @ q)


@torch.enable_grad()  # the pipeline runs under no_grad
def learn_rotation(
    model: nn.Module,
    fam,
    ids: torch.Tensor,
    schemes: dict[str, Scheme],
    q0: torch.Tensor,
    steps: int,
    lr: float,
    batch: int,
    seq_len: int,
    seed: int,
    progress: bool = True,
) -> tuple[torch.Tensor, list[float]]:
    """The learned residual rotation ``[d, d]`` float64 (from ``q0``) and the loss of
    every step. The model's block norms must be folded already; it is not modified."""
    readers, writers = stream_readers_writers(model, fam)
    named = dict(model.named_parameters(remove_duplicate=False))
    base = {n: p.detach() for n, p in named.items()}
    embed_w = f"{fam.embed}.weight"
    head = model.get_submodule(fam.head)
    tied = head.weight is model.get_submodule(fam.embed).weight
    final_w = f"{fam.final_norm}.weight"
    g = base[final_w].clone()
    state: dict[str, torch.Tensor] = {}

    def head_in(_m, args):
        q = state["q"]
        return (((args[0] @ q.T) * g) @ q, *args[1:])

    def act_hook(scheme: Scheme):
        def hook(_m, args):
            x = args[0]
            return (x + (quantize_activation(x, scheme.act) - x).detach(), *args[1:])

        return hook

    handles = [head.register_forward_pre_hook(head_in)]
    for name, scheme in schemes.items():
        if scheme.act is not None:
            handles.append(model.get_submodule(name).register_forward_pre_hook(act_hook(scheme)))
    gen = torch.Generator().manual_seed(seed)
    q = q0.to(torch.float32).clone()
    losses = []
    was_training = model.training
    model.eval()
    try:
        for _ in tqdm(range(steps), desc="spinquant", unit="step", disable=not progress):
            qv = q.clone().requires_grad_(True)
            state["q"] = qv
            p = {final_w: torch.ones_like(g), embed_w: base[embed_w] @ qv}
            if not tied:
                p[f"{fam.head}.weight"] = base[f"{fam.head}.weight"] @ qv
            for n in readers:
                p[f"{n}.weight"] = _ste_weight(base[f"{n}.weight"] @ qv, schemes.get(n))
            for n in writers:
                p[f"{n}.weight"] = _ste_weight(qv.T @ base[f"{n}.weight"], schemes.get(n))
                if f"{n}.bias" in base:
                    p[f"{n}.bias"] = base[f"{n}.bias"] @ qv
            rows = torch.randint(0, ids.shape[0], (batch,), generator=gen)
            x = ids[rows, :seq_len]
            logits = functional_call(model, p, (x,), strict=False).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())
            (grad,) = torch.autograd.grad(loss, qv)
            losses.append(float(loss.detach()))
            q = cayley_step(q, grad, lr)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    # the float32 steps drift from orthogonality by rounding: the nearest orthogonal
    u, _, vh = torch.linalg.svd(q.double())
    return u @ vh, losses


@register_transform(
    "spinquant",
    format_ops=("choose_params", "fake_quantize"),
    scope="model",
    limits={
        "steps": (lambda v: v >= 1, "steps >= 1"),
        "lr": (lambda v: v > 0, "lr > 0"),
        "batch": (lambda v: v >= 1, "batch >= 1"),
        "seq_len": (lambda v: v >= 2, "seq_len >= 2"),
    },
)
def spinquant(
    model: nn.Module,
    calib_ids: torch.Tensor | None,
    schemes: dict,
    seed: int = 0,
    steps: int = 50,
    lr: float = 1.5,
    batch: int = 4,
    seq_len: int = 256,
    online_down: bool = True,
    heads: bool = True,
) -> dict[str, Any]:
    """Fold and rotate as ``hadamard`` does, with the residual rotation learned on
    ``calib_ids`` (int64 ``[n, seq]``) against the ``schemes`` planned per module."""
    if calib_ids is None:
        raise LmpressError("spinquant learns its rotation on calibration text; pass --calib")
    if {p.dtype for p in model.parameters()} != {torch.float32}:
        raise LmpressError("spinquant needs a float32 model (it differentiates through it)")
    fam = _rotatable(model)
    before = _probe_logits(model)
    d = model.get_submodule(fam.embed).weight.shape[1]
    info = prepare_rotation(model, fam, seed, online_down, heads)
    q, losses = learn_rotation(
        model,
        fam,
        calib_ids,
        schemes,
        randomized_hadamard(d, seed),
        steps,
        lr,
        batch,
        seq_len,
        seed,
    )
    tied = rotate_residual(model, fam, q, InputRotation.from_matrix(q, inner=True))
    return {
        "residual": d,
        **info,
        "tied_head_online": tied,
        "seed": seed,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_min": min(losses),
        "logit_drift": check_function(model, before, "spinquant"),
    }
