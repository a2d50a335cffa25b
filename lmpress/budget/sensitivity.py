"""How much each module's quantization would cost the model, per candidate scheme.

The predicted loss increase of quantizing linear ``W`` to ``Q`` alone is the
second-order term of the end loss in the layer's outputs, with the empirical Fisher
(squared end-loss gradients) as its curvature and tokens and channels treated as
independent (the diagonal output-space Fisher GuidedQuant weights GPTQ by; HAWQ and
the layer-wise OBS line use the same quadratic model)::

    dL ~= 1/2 * sum_o f[o] * ((W - Q) H (W - Q)^T)[o, o]
    f[o] = mean_t (dL_sum / dy[t, o])^2,   H = mean_t x_t x_t^T

in nats per token, where ``L_sum`` is the summed next-token cross-entropy, so that a
module's figure is comparable with the KL divergence it would add and the figures of
different modules can be added (the knapsack's assumption). ``Q`` is the candidate
method's own solution with the float model's ``H``: GPTQ's compensation, not RTN's
error, decides what a low-bit choice costs.
"""

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme
from lmpress.guidance import end_loss_backward
from lmpress.methods import get_method
from lmpress.models.arch import linear_weight
from lmpress.packing.packed import PackedWeight


@dataclass
class ModuleStats:
    """Calibration statistics of one linear: ``hessian`` float32 ``[in, in]`` (mean of
    ``x x^T`` over every token; one tensor shared by linears reading the same input),
    ``fisher`` float32 ``[out]`` (squared end-loss gradients of each output channel,
    summed over tokens and divided by the number of predicted tokens), ``tokens``
    counted."""

    hessian: torch.Tensor
    fisher: torch.Tensor
    tokens: int


def module_statistics(
    model: nn.Module,
    names: list[str],
    ids: torch.Tensor,
    batch_size: int = 2,
    progress: bool = True,
) -> dict[str, ModuleStats]:
    """Input second moments and output Fisher of the linears ``names`` (full module
    names) of the float ``model``, by one forward and backward pass per batch of the
    int64 ``[n_samples, seq_len]`` calibration ``ids``. Linears reading the same input
    tensor (q/k/v, gate/up) share one Hessian, computed and stored once. Parameters
    and the model's train/eval mode are left as they were."""
    acc_h: dict[str, torch.Tensor] = {}  # per input group, under its first module's name
    acc_f: dict[str, torch.Tensor] = {}
    leader: dict[str, str] = {}  # module -> the first module that read the same input
    # (id, version) of an input tensor -> (the tensor, the module that read it first),
    # within one batch; holding the tensor keeps its id from being reused
    seen: dict[tuple[int, int], tuple[torch.Tensor, str]] = {}
    counts = {"tokens": 0, "predicted": 0}

    def hooks(name: str):
        def pre(_m, args):  # noqa: ANN001, ANN202
            x = args[0]
            key = (id(x), x._version)
            if key in seen:
                leader.setdefault(name, seen[key][1])
                return
            seen[key] = (x, name)
            if leader.setdefault(name, name) != name:
                return  # an earlier batch found this module sharing another's input
            x2 = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
            if name in acc_h:
                acc_h[name].addmm_(x2.T, x2)
            else:
                acc_h[name] = x2.T @ x2

        def record(grad: torch.Tensor) -> None:
            sq = grad.detach().reshape(-1, grad.shape[-1]).to(torch.float32).square().sum(0)
            if name in acc_f:
                acc_f[name].add_(sq)
            else:
                acc_f[name] = sq

        def post(_m, _args, out):  # noqa: ANN001, ANN202
            if out.requires_grad:
                out.register_hook(record)

        return pre, post

    if ids.shape[0] == 0 or ids.shape[1] < 2:
        raise LmpressError("the sensitivity pass needs calibration samples of 2 tokens or more")

    def new_batch(x: torch.Tensor) -> None:
        seen.clear()
        counts["tokens"] += x.numel()
        counts["predicted"] += x.shape[0] * (x.shape[1] - 1)

    was_training = model.training
    handles = []
    for n in names:
        pre, post = hooks(n)
        mod = model.get_submodule(n)
        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        model.eval()  # no dropout; and no gradient checkpointing re-running the hooks
        end_loss_backward(model, ids, batch_size, "sensitivity", progress, new_batch)
    finally:
        seen.clear()
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n in names if n not in acc_f or leader.get(n, n) not in acc_h]
    if missing:
        raise LmpressError(
            f"{missing[0]} took no part in the model's forward or backward pass; "
            "it cannot be measured (keep it float with a skip override)"
        )
    t, p = counts["tokens"], counts["predicted"]
    h = {n: acc_h[n].div_(t) for n in acc_h}
    # the loss is a mean over predicted tokens: f is normalised by their count, H by
    # every token's (see the module docstring)
    return {n: ModuleStats(h[leader[n]], acc_f[n] / p, t) for n in names}


def predicted_loss(w: torch.Tensor, dq: torch.Tensor, stats: ModuleStats) -> float:
    """The module's predicted loss increase (nats per token, see the module docstring)
    of replacing float32 ``[out, in]`` weight ``w`` by ``dq``."""
    d = (w - dq).to(torch.float32)
    per_row = ((d @ stats.hessian) * d).sum(1)
    return float(0.5 * (stats.fisher * per_row).sum())


@dataclass
class Candidate:
    """One module at one scheme: bits it stores, predicted loss increase, and (when
    kept for a search) the packed solution."""

    scheme: Scheme
    bits: int
    cost: float
    packed: PackedWeight | None = field(default=None, repr=False)


def candidate_costs(
    model: nn.Module,
    stats: dict[str, ModuleStats],
    schemes: dict[str, list[Scheme]],
    probes: dict[str, tuple[str, dict]],
    keep_packed: bool = False,
    progress: bool = True,
) -> dict[str, list[Candidate]]:
    """For every module of ``schemes`` (full name -> candidate schemes), the bits and
    predicted cost of its method's solution at each candidate (``probes``: full name
    -> (method, options)), given the float model's statistics (and the solution
    itself with ``keep_packed``). The model is not changed."""
    out: dict[str, list[Candidate]] = {}
    total = sum(len(v) for v in schemes.values())
    bar = tqdm(total=total, desc="candidates", unit="solve", disable=not progress)
    for name, cands in schemes.items():
        method, args = probes[name]
        spec = get_method(method)
        w = linear_weight(model.get_submodule(name)).detach().to(torch.float32)
        st = stats[name]
        h = st.hessian if spec.needs(args).hessian else None
        row = []
        for s in cands:
            packed = spec.fn(w, s, h, **args).packed(s)
            cost = predicted_loss(w, packed.dequantize(), st)
            row.append(Candidate(s, packed.stored_bits(), cost, packed if keep_packed else None))
            bar.update()
        out[name] = row
    bar.close()
    return out
