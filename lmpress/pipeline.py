"""Run a recipe over a model block by block.

Only one decoder block's calibration activations live in memory at a time. For
each block, linears are quantized in the order the block consumes their inputs
(true-sequential): linears that read the same tensor (q/k/v, gate/up) form a
group sharing one Hessian, and each group's inputs are recomputed through the
already-quantized earlier groups. The forward that collects a group's Hessian
stops as soon as that group's input is seen, so collecting statistics costs
little more than one pass. The block's outputs, computed with its quantized
weights, are the next block's inputs (error propagation).

A method with a block-level stage (``MethodSpec.refine``, e.g. learned rounding)
gets the whole block after its linears are quantized, together with the float
block's outputs on the float model's inputs; for those the pipeline carries a
second, float stream of hidden states through the blocks.
"""

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lmpress.errors import LmpressError
from lmpress.guidance import output_saliency
from lmpress.methods import get_method
from lmpress.methods.base import BlockLayer
from lmpress.models.arch import BlockLayout, arch_name, find_layout, is_linear, linear_weight
from lmpress.nn.kv_cache import install_kv_quant
from lmpress.nn.observe import calibrate_input_scales
from lmpress.nn.qlinear import QLinear
from lmpress.packing.packed import PackedWeight
from lmpress.recipe import ModulePlan, Recipe
from lmpress.transforms import get_transform
from lmpress.transforms.base import block_output, run_block, slice_batch
from lmpress.transforms.rotation import attach_input_rotation


class _Stop(Exception):
    """Raised inside a hook to end a forward pass early."""


@dataclass
class QuantizeResult:
    """A quantized model and what the run found out about it."""

    model: nn.Module
    packed: dict[str, PackedWeight]
    plans: dict[str, ModulePlan]
    seconds: float
    # relative output error ||dW X||^2 / ||W X||^2 on the calibration set (calibrated methods)
    layer_errors: dict[str, float] = field(default_factory=dict)
    # blocks whose outputs came from the linear correction instead of a full pass
    fast_propagation_blocks: int = 0
    # per block: transform name -> what it chose (e.g. AWQ's alpha per group)
    transforms: list[dict] = field(default_factory=list)
    # relative weight error ||dW||^2 / ||W||^2 of every quantized module (needs no data)
    weight_errors: dict[str, float] = field(default_factory=dict)
    # model-wide transforms (a rotation): name -> what it did
    model_transforms: dict[str, dict] = field(default_factory=dict)
    # static activation schemes: module -> its calibrated per-tensor input scale
    input_scales: dict[str, float] = field(default_factory=dict)
    # set by lmpress.quantize: the tokenizer to save beside the model, and what the
    # checkpoint's quantization_config records of the run (recipe, calibration, ...)
    tokenizer: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


Batch = tuple[torch.Tensor, dict]


def _capture_block_inputs(
    model: nn.Module, layout: BlockLayout, ids: torch.Tensor, batch_size: int
) -> list[Batch]:
    """Hidden states and keyword arguments entering the first block, per batch."""
    batches: list[Batch] = []

    def hook(_m, args, kwargs):
        kw = dict(kwargs)
        h = args[0] if args else kw.pop("hidden_states")
        kw.pop("hidden_states", None)
        batches.append((h.detach(), kw))
        raise _Stop

    handle = layout.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, ids.shape[0], batch_size):
            try:
                model(ids[i : i + batch_size], use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return batches


def _same_args(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return (
            torch.is_tensor(a)
            and torch.is_tensor(b)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(torch.equal(a, b))
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_args(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_args(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  (objects without a usable ==, e.g. cache objects)
        return a is b


@torch.no_grad()
def _check_uniform_block_args(model: nn.Module, layout: BlockLayout, ids: torch.Tensor) -> None:
    """Refuse models whose blocks get different keyword arguments (e.g. sliding-window layers).

    The pipeline replays block 0's arguments to every block; one short forward
    of one sample checks that this is right for this model.
    """
    seen: list[dict] = []

    def hook(_m, _args, kwargs):
        seen.append({k: v for k, v in kwargs.items() if k != "hidden_states"})

    handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in layout.blocks]
    try:
        model(ids[:1], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for i, kw in enumerate(seen[1:], start=1):
        if not _same_args(kw, seen[0]):
            raise LmpressError(
                f"architecture {arch_name(model)!r} passes different arguments to decoder "
                f"block {i} than to block 0 (e.g. sliding-window attention layers); block-by-block "
                "calibration does not support it yet: use a method without calibration (rtn)"
            )


def _input_groups(block: nn.Module, names: list[str], batch: Batch) -> list[list[str]]:
    """Linears of ``block`` grouped by shared input tensor, in the order they run."""
    mods = dict(block.named_modules())
    calls: list[tuple[str, torch.Tensor]] = []
    handles = [
        mods[n].register_forward_pre_hook(lambda _m, a, n=n: calls.append((n, a[0]))) for n in names
    ]
    h, kw = slice_batch(batch, 1)
    try:
        block(h, **kw)
    finally:
        for hd in handles:
            hd.remove()
    groups: list[list[str]] = []
    seen: set[str] = set()
    prev = None
    for n, x in calls:
        if n in seen:
            continue
        seen.add(n)
        if prev is not None and x is prev:
            groups[-1].append(n)
        else:
            groups.append([n])
        prev = x
    # Linears the forward never reached still get quantized, each alone.
    groups += [[n] for n in names if n not in seen]
    return groups


@torch.no_grad()
def _group_hessian(
    block: nn.Module,
    first: nn.Module,
    batches: list[Batch],
    dim: int,
    keep_inputs_and_outputs: bool = False,
    saliency: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor]]:
    """``X^T X / n`` over the calibration tokens entering ``first`` (float32 ``[dim, dim]``).

    Normally the forward stops at ``first``. With ``keep_inputs_and_outputs`` it
    runs to the end and also returns each batch's input to ``first`` and the
    block's output, for :func:`_outputs_by_linear_correction`. ``saliency`` maps
    linears reading this input to their end-loss weights ``[n_tokens, g]``
    (:func:`lmpress.guidance.output_saliency`) for the first ``n_tokens`` calibration
    tokens; for each, the last value returned holds ``g`` weighted Hessians
    ``[g, dim, dim]`` over those tokens (``sum_t s[t, k] x_t x_t^T / n_tokens``).
    """
    H = torch.zeros(dim, dim)
    saliency = saliency or {}
    guided = {n: torch.zeros(s.shape[1], dim, dim) for n, s in saliency.items()}
    count = 0
    inputs: list[torch.Tensor] = []

    def hook(_m, args):
        nonlocal count
        x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float32)
        _add_gram_upper(H, x)
        for n, s in saliency.items():
            # the saliency may cover only the first calibration samples
            w = s[count : count + x.shape[0]].sqrt()
            for k in range(s.shape[1]):
                if w.shape[0]:
                    _add_gram_upper(guided[n][k], x[: w.shape[0]] * w[:, k : k + 1])
        count += x.shape[0]
        if keep_inputs_and_outputs:
            inputs.append(args[0])
            return None
        raise _Stop

    outputs: list[torch.Tensor] = []
    handle = first.register_forward_pre_hook(hook)
    try:
        for h, kw in batches:
            try:
                out = block(h, **kw)
                outputs.append(block_output(out))
            except _Stop:
                pass
    finally:
        handle.remove()
    H = torch.triu(H) + torch.triu(H, diagonal=1).T
    for n, g in guided.items():
        n_guided = max(min(count, saliency[n].shape[0]), 1)
        g.copy_(torch.triu(g) + torch.triu(g, diagonal=1).transpose(1, 2)).div_(n_guided)
    return H / max(count, 1), inputs, outputs, guided


def _add_gram_upper(H: torch.Tensor, x: torch.Tensor, splits: int = 3) -> None:
    """Add ``x^T x`` to the upper block triangle of ``H [d, d]``; ``x`` is ``[n, d]`` float32.

    Skipping the blocks below the diagonal saves a third of the work of the
    largest cost of calibration (``d^2`` per token); the caller mirrors ``H``.
    """
    d = x.shape[1]
    if d < 256:
        H.addmm_(x.T, x)
        return
    bs = -(-d // splits)
    for i in range(0, d, bs):
        xi = x[:, i : i + bs].T
        H[i : i + bs, i:].addmm_(xi, x[:, i:])


@torch.no_grad()
def _outputs_by_linear_correction(
    block: nn.Module,
    batches: list[Batch],
    inputs: list[torch.Tensor],
    outputs: list[torch.Tensor],
    delta: torch.Tensor,
) -> tuple[list[torch.Tensor], bool]:
    """Block outputs after quantizing its last linear, without another full pass.

    In pre-norm blocks the last linear's output is added to the residual stream,
    so ``out_q = out_f + x @ (W_q - W_f)^T``. That is checked against a real
    forward on the first batch; blocks where it does not hold get the full pass.
    """
    h, kw = batches[0]
    full = block_output(block(h, **kw))
    fixed: list[torch.Tensor] = []
    corr_max = torch.zeros(())
    pairs = list(zip(inputs, outputs, strict=True))
    if all(x.numel() // x.shape[-1] * delta.shape[0] == o.numel() for x, o in pairs):
        for x, o in pairs:
            corr = x.reshape(-1, x.shape[-1]).to(torch.float32) @ delta.T
            if not fixed:
                corr_max = corr.abs().max()
            fixed.append(o.add_(corr.reshape(o.shape).to(o.dtype)))  # in place: memory
    # A right correction leaves only float rounding; a wrong one (the last linear does
    # not feed the output linearly) leaves an error of the order of the correction.
    tol = 1e-2 * corr_max + 1e-6 * full.abs().max()
    if fixed and (full - fixed[0]).abs().max() <= tol:
        fixed[0] = full
        return fixed, True
    return [full] + [block_output(block(h, **kw)) for h, kw in batches[1:]], False


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _weight_error(w: torch.Tensor, dq: torch.Tensor) -> float:
    """Relative weight error ``||w - dq||^2 / ||w||^2`` of float32 ``[out, in]`` weights."""
    return float((w - dq).square().sum() / w.square().sum().clamp_min(1e-30))


def _quantize_one(
    module: nn.Module,
    plan: ModulePlan,
    hessian: torch.Tensor | None,
    method_hessian: torch.Tensor | None = None,
) -> tuple[PackedWeight, float | None, float]:
    """Quantize one linear; write the dequantized weight back so later groups see it.

    ``method_hessian`` (default ``hessian``) is what the method is given, e.g.
    GuidedQuant's ``[g, in, in]`` stack. Returns the packed weight, the relative
    output error under the plain ``hessian`` and the relative weight error."""
    w = linear_weight(module).detach().to(torch.float32)
    spec = get_method(plan.method)
    given = hessian if method_hessian is None else method_hessian
    res = spec.fn(w, plan.scheme, given if plan.needs_hessian else None, **plan.method_args)
    packed = res.packed(plan.scheme)
    dq = packed.dequantize()
    err = None
    d = w - dq
    if hessian is not None:
        err = float((d @ hessian * d).sum() / (w @ hessian * w).sum().clamp_min(1e-30))
    werr = _weight_error(w, dq)
    linear_weight(module).copy_(dq.to(module.weight.dtype))
    return packed, err, werr


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    recipe: Recipe,
    calib_ids: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize ``model`` in place by ``recipe``; its planned linears become ``QLinear``.

    ``calib_ids`` is ``int64 [n_samples, seq_len]``; required when a planned
    method needs calibration statistics. Runs on torch's current thread settings (the
    CLI sets them; the library leaves them to its caller).
    """
    t0 = time.perf_counter()
    layout = find_layout(model)
    recipe.check_overrides_match(
        [layout.full_name(b, n) for b, ns in enumerate(layout.linear_names) for n in ns]
    )
    plans: dict[str, ModulePlan] = {}
    for b, names in enumerate(layout.linear_names):
        for n in names:
            plan = recipe.plan_for(layout.full_name(b, n))
            if plan is not None:
                plans[layout.full_name(b, n)] = plan
    if not plans:
        raise LmpressError("the recipe leaves every linear layer float; nothing to quantize")
    _check_groups(model, plans)

    model_steps = [t for t in recipe.transforms if get_transform(t.name).scope == "model"]
    block_steps = [t for t in recipe.transforms if get_transform(t.name).scope != "model"]
    static_acts = any(p.scheme.act is not None and not p.scheme.act.dynamic for p in plans.values())
    needs_data = bool(block_steps) or any(p.needs_hessian for p in plans.values())
    model_data = any(get_transform(t.name).needs_data for t in model_steps)
    if (needs_data or static_acts or model_data) and calib_ids is None:
        raise LmpressError("this recipe needs calibration data; pass calibration text")
    planned = {n: p.scheme for n, p in plans.items()}
    model_log = {
        t.name: get_transform(t.name).fn(model, calib_ids, planned, **t.args) for t in model_steps
    }

    packed: dict[str, PackedWeight] = {}
    errors: dict[str, float] = {}
    weight_errors: dict[str, float] = {}
    fast_blocks = 0
    transform_log: list[dict] = [{} for _ in layout.blocks]
    batches: list[Batch] = []
    if needs_data:
        try:
            _check_uniform_block_args(model, layout, calib_ids)
            batches = _capture_block_inputs(model, layout, calib_ids, batch_size)
        except LmpressError:
            raise
        except Exception as e:  # noqa: BLE001  (an architecture we cannot drive)
            raise LmpressError(
                f"architecture {arch_name(model)!r}: running its decoder blocks for "
                f"calibration failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}); "
                "it is not supported yet"
            ) from e
    # GuidedQuant: end-loss weights from the float model, before any block changes
    guided_groups = {n: p.needs.guided_groups for n, p in plans.items() if p.needs.guided_groups}
    saliency: dict[str, torch.Tensor] = {}
    if guided_groups:
        n_s = max(plans[n].needs.guided_samples for n in guided_groups)
        ids = calib_ids if n_s == 0 else calib_ids[:n_s]
        saliency = output_saliency(model, guided_groups, ids, progress=progress)
    # Block-level refinement (learned rounding) fits each block to the float block's
    # outputs on the float model's inputs: a second, float stream of hidden states.
    to_refine = [
        [n for n in names if needs_data and _refines(plans.get(layout.full_name(b, n)))]
        for b, names in enumerate(layout.linear_names)
    ]
    refined_blocks = [b for b, ns in enumerate(to_refine) if ns]
    float_batches: list[Batch] = list(batches) if refined_blocks else []
    bar = tqdm(
        total=len(layout.blocks),
        desc=f"quantize ({recipe.label})",
        unit="block",
        disable=not progress,
    )
    for b, block in enumerate(layout.blocks):
        mods = dict(block.named_modules())
        names = [n for n in layout.linear_names[b] if layout.full_name(b, n) in plans]
        block_needs_data = needs_data and (
            bool(block_steps) or any(plans[layout.full_name(b, n)].needs_hessian for n in names)
        )
        groups = (
            _input_groups(block, names, batches[0]) if block_needs_data else [[n] for n in names]
        )
        if block_needs_data and block_steps:
            schemes = {n: plans[layout.full_name(b, n)].scheme for n in names}
            # every linear, planned or kept float: a fold must rescale all readers of an input
            all_groups = _input_groups(block, layout.linear_names[b], batches[0])
            for step in block_steps:
                transform_log[b][step.name] = get_transform(step.name).fn(
                    block, batches, all_groups, schemes, **step.args
                )
        refine_names = to_refine[b]
        targets: list[torch.Tensor] = []
        if float_batches:
            targets = [run_block(block, fb) for fb in float_batches]
            float_batches = (
                [(t, kw) for t, (_, kw) in zip(targets, float_batches, strict=True)]
                if b < refined_blocks[-1]
                else []
            )
        start_weights = {
            n: linear_weight(mods[n]).detach().to(torch.float32).clone() for n in refine_names
        }
        propagated = False
        for gi, group in enumerate(groups):
            H = None
            propagate_here = (
                needs_data
                and not refine_names
                and gi == len(groups) - 1
                and len(group) == 1
                and b + 1 < len(layout.blocks)
            )
            inputs: list[torch.Tensor] = []
            outputs: list[torch.Tensor] = []
            guided: dict[str, torch.Tensor] = {}
            if block_needs_data and any(plans[layout.full_name(b, n)].needs_hessian for n in group):
                first = mods[group[0]]
                sal = {
                    n: saliency[layout.full_name(b, n)]
                    for n in group
                    if layout.full_name(b, n) in saliency
                }
                H, inputs, outputs, guided = _group_hessian(
                    block, first, batches, linear_weight(first).shape[1], propagate_here, sal
                )
            w_before = linear_weight(mods[group[-1]]).detach().to(torch.float32).clone()
            for n in group:
                full = layout.full_name(b, n)
                packed[full], err, weight_errors[full] = _quantize_one(
                    mods[n], plans[full], H, guided.pop(n, None)
                )
                if err is not None:
                    errors[full] = err
            if propagate_here and outputs:
                delta = linear_weight(mods[group[-1]]).detach().to(torch.float32) - w_before
                new_h, fast = _outputs_by_linear_correction(block, batches, inputs, outputs, delta)
                batches = [(o, kw) for o, (_, kw) in zip(new_h, batches, strict=True)]
                propagated = True
                fast_blocks += int(fast)
            del inputs, outputs
        if refine_names:
            by_method: dict[str, list[str]] = {}
            for n in refine_names:
                by_method.setdefault(plans[layout.full_name(b, n)].method, []).append(n)
            for method, ns in by_method.items():
                layers = [
                    BlockLayer(mods[n], n, start_weights[n], packed[layout.full_name(b, n)])
                    for n in ns
                ]
                options = plans[layout.full_name(b, ns[0])].method_args
                new, summary = get_method(method).refine(
                    block, layers, batches, targets, **options, seed=b
                )
                transform_log[b][f"{method}:refine"] = summary
                for n, p in new.items():
                    full = layout.full_name(b, n)
                    packed[full] = p
                    dq = p.dequantize()
                    weight_errors[full] = _weight_error(start_weights[n], dq)
                    # the Hessian-form error described the start, not this result
                    errors.pop(full, None)
                    linear_weight(mods[n]).copy_(dq.to(mods[n].weight.dtype))
        del targets
        if needs_data and b + 1 < len(layout.blocks) and not propagated:
            batches = [(block_output(block(h, **kw)), kw) for h, kw in batches]
        bar.update(1)
    bar.close()
    for full, p in packed.items():
        old = model.get_submodule(full)
        new = QLinear.from_packed(p, old.bias)
        rotation = getattr(old, "input_rotation", None)
        if rotation is not None:
            attach_input_rotation(new, rotation)
        _set_module(model, full, new)
    if recipe.kv_cache is not None:
        install_kv_quant(model, recipe.kv_cache)
    input_scales = (
        calibrate_input_scales(model, calib_ids, batch_size, progress) if static_acts else {}
    )
    return QuantizeResult(
        model,
        packed,
        plans,
        time.perf_counter() - t0,
        errors,
        fast_blocks,
        transform_log,
        weight_errors,
        model_transforms=model_log,
        input_scales=input_scales,
    )


def _refines(plan: ModulePlan | None) -> bool:
    return plan is not None and get_method(plan.method).uses_refine(plan.method_args)


def _check_groups(model: nn.Module, plans: dict[str, ModulePlan]) -> None:
    """A group size larger than every planned module's width is a user error."""
    by_scheme: dict = {}
    for name, plan in plans.items():
        in_f = linear_weight(model.get_submodule(name)).shape[1]
        by_scheme[plan.scheme] = max(by_scheme.get(plan.scheme, 0), in_f)
    for scheme, widest in by_scheme.items():
        scheme.check_fits(widest, "every quantized module")
    for name, plan in plans.items():
        w = linear_weight(model.get_submodule(name)).detach()
        problem = plan.scheme.fmt.storage_problem(w)
        if problem is not None:
            raise LmpressError(f"{name} {problem}, or keep it float (--override '{name}=skip')")


def quantizable_linears(model: nn.Module) -> list[str]:
    """Full names of the linear layers inside decoder blocks."""
    layout = find_layout(model)
    return [layout.full_name(b, n) for b, ns in enumerate(layout.linear_names) for n in ns]


__all__ = ["QuantizeResult", "quantize_model", "quantizable_linears", "is_linear"]
