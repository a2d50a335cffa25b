"""QuaRot-style rotation of the whole model (Ashkboos et al., 2024).

Outlier channels of the residual stream make activations hard to quantize; rotating
the stream by an orthogonal ``Q`` (a randomized Hadamard matrix) spreads every
channel's energy over all of them without changing the function:

- each RMSNorm's weight is folded into the linears that read its output (the norm
  then only divides by the RMS, which ``Q`` leaves unchanged);
- the embedding rows become ``E Q``; every linear that reads the stream ``W Q``;
  every linear that writes it (``o_proj``, ``down_proj``) ``Q^T W`` (bias ``Q^T b``);
- an untied output head becomes ``W diag(g) Q`` with the final norm's weight ``g``; a
  head tied to the embedding keeps the rotated embedding and gets ``g`` through an
  online :class:`~lmpress.transforms.rotation.InputRotation` (``((x Q^T) g) Q``);
- ``down_proj``'s input (after the gated nonlinearity) is rotated online by a second
  randomized Hadamard ``R`` and its weight becomes ``W R``;
- each value head is rotated by a Hadamard of the head size, folded into ``v_proj``'s
  rows and ``o_proj``'s columns.

Rotations of sizes that are not powers of two are Kronecker products
(:mod:`lmpress.transforms.hadamard`). The transform checks on a short sequence that the
float model's logits are unchanged before the model is quantized.
"""

from typing import Any

import torch
from torch import nn

from lmpress.errors import LmpressError
from lmpress.models.arch import arch_name
from lmpress.models.families import Family, model_family
from lmpress.transforms.base import register_transform
from lmpress.transforms.hadamard import random_signs, rotation_matrix
from lmpress.transforms.rotation import InputRotation, attach_input_rotation

# largest |logit change| / largest |logit| accepted as "the same function" (float32)
FUNCTION_TOL = 1e-3


def randomized_hadamard(n: int, seed: int) -> torch.Tensor:
    """``diag(signs) H`` ``[n, n]`` float64, orthonormal (signs seeded by ``seed``)."""
    return random_signs(n, seed).unsqueeze(1) * rotation_matrix(n, seed)


def _rotatable(model: nn.Module) -> Family:
    fam = model_family(model)
    if fam is None or fam.norm != "rmsnorm" or not fam.split_qkv or not fam.gated_mlp:
        raise LmpressError(
            f"the hadamard transform rotates RMSNorm families with separate q/k/v and a "
            f"gated MLP (llama, mistral, qwen2, qwen3); {arch_name(model)!r} is not one yet"
        )
    return fam


def _set(lin: nn.Linear, w: torch.Tensor, b: torch.Tensor | None = None) -> None:
    lin.weight.data.copy_(w.to(lin.weight.dtype))
    if b is not None and lin.bias is not None:
        lin.bias.data.copy_(b.to(lin.bias.dtype))


def _w(lin: nn.Module) -> torch.Tensor:
    return lin.weight.detach().to(torch.float64)


def _fold_norm(norm: nn.Module, readers: list[nn.Linear]) -> None:
    """Fold an RMSNorm's weight into the columns of the linears that read it."""
    g = norm.weight.detach().to(torch.float64)
    for lin in readers:
        _set(lin, _w(lin) * g)
    norm.weight.data.fill_(1.0)


def _probe_logits(model: nn.Module) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = (torch.arange(32).unsqueeze(0) * 7919 + 13) % vocab
    with torch.no_grad():
        return model(ids.to(model.get_input_embeddings().weight.device)).logits.float()


@register_transform("hadamard", format_ops=(), scope="model")
def hadamard(
    model: nn.Module, seed: int = 0, online_down: bool = True, heads: bool = True
) -> dict[str, Any]:
    """Rotate ``model`` in place (see the module docstring); returns what was rotated.

    ``online_down``: also rotate ``down_proj``'s input online; ``heads``: rotate the
    value heads (folded)."""
    fam = _rotatable(model)
    before = _probe_logits(model)
    cfg = model.config
    blocks = model.get_submodule(fam.blocks)
    embed = model.get_submodule(fam.embed)
    head = model.get_submodule(fam.head)
    d = embed.weight.shape[1]
    q = randomized_hadamard(d, seed)
    tied = head.weight is embed.weight
    n_head = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or d // n_head
    h_head = rotation_matrix(hd, seed)
    inter = None
    for blk in blocks:
        sub = blk.get_submodule
        qkv = [sub(n) for n in fam.qkv]
        mlp_in = [sub(n) for n in fam.mlp_in]
        o, down = sub(fam.attn_out), sub(fam.mlp_out)
        _fold_norm(sub(fam.attn_norm), qkv)
        _fold_norm(sub(fam.mlp_norm), mlp_in)
        for lin in (*qkv, *mlp_in):
            _set(lin, _w(lin) @ q)
        for lin in (o, down):
            b = None if lin.bias is None else q.T @ lin.bias.detach().double()
            _set(lin, q.T @ _w(lin), b)
        if heads:
            v = qkv[2]
            wv = _w(v).reshape(-1, hd, d)
            bv = None if v.bias is None else (v.bias.detach().double().reshape(-1, hd) @ h_head)
            wv = torch.einsum("ji,hjd->hid", h_head, wv).reshape(-1, d)
            _set(v, wv, None if bv is None else bv.reshape(-1))
            wo = _w(o).reshape(d, -1, hd)
            _set(o, (wo @ h_head).reshape(d, -1))
        if online_down:
            inter = down.weight.shape[1]
            rot = InputRotation(inter, seed + 1)
            _set(down, _w(down) @ rot.matrix())
            attach_input_rotation(down, rot)
    _set(embed, _w(embed) @ q)
    final = model.get_submodule(fam.final_norm)
    if tied:
        rot = InputRotation(d, seed, inner=True)
        rot.inner.copy_(final.weight.detach().float())
        final.weight.data.fill_(1.0)
        attach_input_rotation(head, rot)
    else:
        g = final.weight.detach().double()
        _set(head, _w(head) * g @ q)
        final.weight.data.fill_(1.0)
    after = _probe_logits(model)
    drift = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
    if not drift <= FUNCTION_TOL:
        raise LmpressError(
            f"the hadamard rotation changed {arch_name(model)!r}'s float logits by {drift:.2e} "
            f"of their range (tolerance {FUNCTION_TOL}); this model's layout differs from "
            "what the rotation assumes"
        )
    return {
        "residual": d,
        "down_proj_online": inter,
        "value_heads": hd if heads else None,
        "tied_head_online": tied,
        "seed": seed,
        "logit_drift": drift,
    }
