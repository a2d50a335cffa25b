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


def prepare_rotation(
    model: nn.Module, fam: Family, seed: int, online_down: bool, heads: bool
) -> dict[str, Any]:
    """The rotations that do not touch the residual stream: block norms folded into
    their readers, value heads rotated (folded), ``down_proj``'s input rotated online.
    Each keeps the float function on its own."""
    cfg = model.config
    d = model.get_submodule(fam.embed).weight.shape[1]
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    h_head = rotation_matrix(hd, seed)
    inter = None
    for blk in model.get_submodule(fam.blocks):
        sub = blk.get_submodule
        qkv = [sub(n) for n in fam.qkv]
        o, down = sub(fam.attn_out), sub(fam.mlp_out)
        _fold_norm(sub(fam.attn_norm), qkv)
        _fold_norm(sub(fam.mlp_norm), [sub(n) for n in fam.mlp_in])
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
    return {"down_proj_online": inter, "value_heads": hd if heads else None}


def stream_readers_writers(model: nn.Module, fam: Family) -> tuple[list[str], list[str]]:
    """Names of the linears that read the residual stream and of those that write it."""
    readers, writers = [], []
    for b in range(len(model.get_submodule(fam.blocks))):
        pre = f"{fam.blocks}.{b}."
        readers += [pre + n for n in (*fam.qkv, *fam.mlp_in)]
        writers += [pre + n for n in (fam.attn_out, fam.mlp_out)]
    return readers, writers


def rotate_residual(
    model: nn.Module, fam: Family, q: torch.Tensor, head_rotation: InputRotation
) -> bool:
    """Rotate the residual stream by the orthogonal ``q [d, d]`` (float64): embedding,
    readers and writers, and the final norm's weight moved past the rotation
    (``head_rotation``, an :class:`InputRotation` of ``q`` with ``inner``, attached to a
    head tied to the embedding; folded into an untied head). Block norms must already be
    folded (:func:`prepare_rotation`). Returns whether the head is tied."""
    embed = model.get_submodule(fam.embed)
    head = model.get_submodule(fam.head)
    tied = head.weight is embed.weight
    readers, writers = stream_readers_writers(model, fam)
    for name in readers:
        lin = model.get_submodule(name)
        _set(lin, _w(lin) @ q)
    for name in writers:
        lin = model.get_submodule(name)
        b = None if lin.bias is None else q.T @ lin.bias.detach().double()
        _set(lin, q.T @ _w(lin), b)
    _set(embed, _w(embed) @ q)
    final = model.get_submodule(fam.final_norm)
    if tied:
        head_rotation.inner.copy_(final.weight.detach().float())
        attach_input_rotation(head, head_rotation)
    else:
        _set(head, _w(head) * final.weight.detach().double() @ q)
    final.weight.data.fill_(1.0)
    return tied


def check_function(model: nn.Module, before: torch.Tensor, what: str) -> float:
    """The logits' change against ``before`` relative to their range; raises past
    :data:`FUNCTION_TOL`."""
    after = _probe_logits(model)
    drift = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
    if not drift <= FUNCTION_TOL:
        raise LmpressError(
            f"the {what} rotation changed {arch_name(model)!r}'s float logits by {drift:.2e} "
            f"of their range (tolerance {FUNCTION_TOL}); this model's layout differs from "
            "what the rotation assumes"
        )
    return drift


@register_transform("hadamard", format_ops=(), scope="model", needs_data=False)
def hadamard(
    model: nn.Module,
    calib_ids: torch.Tensor | None,
    schemes: dict,
    seed: int = 0,
    online_down: bool = True,
    heads: bool = True,
) -> dict[str, Any]:
    """Rotate ``model`` in place (see the module docstring); returns what was rotated.

    ``online_down``: also rotate ``down_proj``'s input online; ``heads``: rotate the
    value heads (folded). Needs no data (``calib_ids`` and ``schemes`` are unused)."""
    fam = _rotatable(model)
    before = _probe_logits(model)
    d = model.get_submodule(fam.embed).weight.shape[1]
    info = prepare_rotation(model, fam, seed, online_down, heads)
    tied = rotate_residual(
        model, fam, randomized_hadamard(d, seed), InputRotation(d, seed, inner=True)
    )
    return {
        "residual": d,
        **info,
        "tied_head_online": tied,
        "seed": seed,
        "logit_drift": check_function(model, before, "hadamard"),
    }
