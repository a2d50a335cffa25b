"""A bit budget turned into a recipe: one candidate scheme per module, by the knapsack.

``allocate`` measures every planned module's candidates (``sensitivity``), solves the
knapsack on the summed predicted loss, and returns the recipe with one override per
(scheme, module kind) for the modules that differ from the most common choice, so the
result is an ordinary recipe that any method runs and a user can edit and reuse.
"""

import re
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lmpress.budget.evopress import SearchLog, evolve
from lmpress.budget.knapsack import knapsack
from lmpress.budget.sensitivity import Candidate, candidate_costs, module_statistics
from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme, parse_scheme
from lmpress.methods import get_method
from lmpress.models.arch import linear_weight
from lmpress.pipeline import quantizable_linears
from lmpress.recipe import Override, Recipe

# Integer group schemes from 2 to 8 bits: the grid the benchmark's uniform rows use.
DEFAULT_CANDIDATES = (
    "w2g128",
    "w2g64",
    "w3g128",
    "w3g64",
    "w4g128",
    "w4g64",
    "w5g128",
    "w6g128",
    "w8g128",
)

SEARCHES = ("knapsack", "evopress")


@dataclass
class Allocation:
    """The allocator's answer: the recipe to run, and what it chose and why."""

    recipe: Recipe
    budget_bits: float  # average bits per weight allowed over the planned modules
    bits_per_weight: float  # what the choice stores (same count)
    predicted_loss: float  # summed predicted loss increase, nats per token
    choice: dict[str, str]  # module -> scheme name
    table: dict[str, list[Candidate]] = field(repr=False, default_factory=dict)
    probe_method: str = ""  # the methods whose solutions were costed, "+"-joined
    probe_samples: int = 0
    seconds: float = 0.0
    search: str = "knapsack"
    search_log: SearchLog | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the choice, and every candidate's bits and cost."""
        return {
            "budget_bits": self.budget_bits,
            "bits_per_weight": self.bits_per_weight,
            "predicted_loss": self.predicted_loss,
            "probe_method": self.probe_method,
            "probe_samples": self.probe_samples,
            "seconds": round(self.seconds, 3),
            "search": self.search,
            **({"search_log": asdict(self.search_log)} if self.search_log else {}),
            "choice": self.choice,
            "candidates": {
                n: [{"scheme": c.scheme.name, "bits": c.bits, "cost": c.cost} for c in cs]
                for n, cs in self.table.items()
            },
        }


def probe_method(recipe: Recipe, name: str) -> tuple[str, dict]:
    """The per-module method whose solutions the costs are measured with: the
    module's own, except that block-level refinement (learned rounding) is measured
    by its GPTQ starting point, GuidedQuant by plain GPTQ (its Hessians come from the
    pipeline), and transforms are not applied."""
    plan = recipe.plan_for(name)
    assert plan is not None
    spec = get_method(plan.method)
    if spec.uses_refine(plan.method_args) or spec.needs(plan.method_args).guided_groups:
        gptq = get_method("gptq")
        return "gptq", gptq.options({}, "gptq")
    return plan.method, plan.method_args


def _kind(name: str) -> str:
    """``model.layers.3.mlp.down_proj`` -> ``mlp.down_proj`` (the part after the index)."""
    m = re.search(r"\.(\d+)\.(.+)$", name)
    return m.group(2) if m else name


def _overrides(choice: dict[str, Scheme], base: Scheme) -> list[Override]:
    """One override per (scheme, module kind) for the modules not at ``base``."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    schemes: dict[str, Scheme] = {}
    for name, s in choice.items():
        if s != base:
            groups[(s.name, _kind(name))].append(name)
            schemes[s.name] = s
    out = []
    for (sname, kind), names in sorted(groups.items()):
        prefixes = {n[: -len(kind) - 1] for n in names}
        if len(prefixes) == 1:
            pattern = "^" + re.escape(names[0]) + "$"
        else:
            # model.layers.(1|4|7).mlp.down_proj
            heads = {re.sub(r"\.\d+$", "", p) for p in prefixes}
            if len(heads) == 1:
                idx = sorted({p.rsplit(".", 1)[1] for p in prefixes}, key=int)
                pattern = (
                    "^"
                    + re.escape(heads.pop())
                    + r"\.("
                    + "|".join(idx)
                    + r")\."
                    + re.escape(kind)
                    + "$"
                )
            else:
                pattern = "^(" + "|".join(re.escape(n) for n in sorted(names)) + ")$"
        out.append(Override(pattern=pattern, scheme=schemes[sname]))
    return out


@torch.no_grad()
def allocate(
    model: nn.Module,
    recipe: Recipe,
    ids: torch.Tensor,
    bits: float,
    candidates: "list[str] | tuple[str, ...]" = DEFAULT_CANDIDATES,
    batch_size: int = 2,
    search: str = "knapsack",
    search_samples: int = 8,
    generations: int = 40,
    progress: bool = True,
) -> Allocation:
    """Choose a scheme per planned module so that the average bits per weight over
    them (everything stored counted) is at most ``bits`` and the summed predicted loss
    increase is least. ``ids`` int64 ``[n, seq_len]`` calibration tokens for the
    statistics (a few dozen samples are plenty). The recipe's overrides that skip
    modules or set their method or options are kept; one that sets a scheme is
    refused, since the allocator sets them all. ``search="evopress"`` then refines the
    knapsack's answer by evolutionary search on the KL measured over the first
    ``search_samples`` samples of ``ids`` (:mod:`lmpress.budget.evopress`),
    ``generations`` of it.
    ``model`` is left unchanged (float)."""
    t0 = time.perf_counter()
    if search not in SEARCHES:
        raise LmpressError(f"unknown search {search!r}; use one of {', '.join(SEARCHES)}")
    pinned = [o.pattern for o in recipe.overrides if o.scheme is not None and not o.skip]
    if pinned:
        raise LmpressError(
            f"override {pinned[0]!r} sets a scheme, but the allocator chooses every module's "
            "scheme; drop it, or keep that module float with a skip override"
        )
    schemes = [parse_scheme(c) for c in candidates]
    if not schemes:
        raise LmpressError("give at least one candidate scheme for the allocation")
    names = [n for n in quantizable_linears(model) if recipe.plan_for(n) is not None]
    if not names:
        raise LmpressError("the recipe leaves every linear layer float; nothing to allocate")
    per_module: dict[str, list[Scheme]] = {}
    for n in names:
        w = linear_weight(model.get_submodule(n))
        fits = []
        for s in schemes:
            if s.act is not None:
                raise LmpressError(
                    f"candidate {s.name!r} quantizes activations; the allocator spends weight "
                    "bits only (give weight-only candidates such as w3g64)"
                )
            if s.granularity == "group" and s.group_size > w.shape[1]:
                continue
            if s.fmt.storage_problem(w.detach()) is not None:
                continue
            fits.append(s)
        if not fits:
            raise LmpressError(f"no candidate scheme applies to {n} (width {w.shape[1]})")
        per_module[n] = fits
    probes = {n: probe_method(recipe, n) for n in names}
    stats = module_statistics(model, names, ids, batch_size=batch_size, progress=progress)
    evo = search == "evopress"
    table = candidate_costs(model, stats, per_module, probes, keep_packed=evo, progress=progress)
    del stats
    numel = {n: linear_weight(model.get_submodule(n)).numel() for n in names}
    total = sum(numel.values())
    picks = knapsack(
        [[c.cost for c in table[n]] for n in names],
        [[float(c.bits) for c in table[n]] for n in names],
        bits * total,
    )
    choice = dict(zip(names, picks, strict=True))
    log = None
    if evo:
        choice, log = evolve(
            model,
            {n: [c.packed for c in table[n]] for n in names},
            {n: [c.bits for c in table[n]] for n in names},
            choice,
            bits * total,
            ids[:search_samples],
            generations=generations,
            batch_size=batch_size,
            progress=progress,
        )
        for cs in table.values():
            for c in cs:
                c.packed = None
    chosen = {n: table[n][choice[n]] for n in names}
    base = Counter(c.scheme.name for c in chosen.values()).most_common(1)[0][0]
    base_scheme = next(c.scheme for c in chosen.values() if c.scheme.name == base)
    kept = [o for o in recipe.overrides if o.skip or o.method or o.method_args]
    new = Recipe(
        method=recipe.method,
        scheme=base_scheme,
        method_args=dict(recipe.method_args),
        overrides=[*kept, *_overrides({n: c.scheme for n, c in chosen.items()}, base_scheme)],
        transforms=list(recipe.transforms),
        kv_cache=recipe.kv_cache,
    )
    for n, c in chosen.items():  # the recipe must reproduce the choice exactly
        plan = new.plan_for(n)
        if plan is None or plan.scheme != c.scheme:
            raise RuntimeError(f"the allocated recipe plans {n} differently from the choice")
    return Allocation(
        recipe=new,
        budget_bits=bits,
        bits_per_weight=sum(c.bits for c in chosen.values()) / total,
        predicted_loss=sum(c.cost for c in chosen.values()),
        choice={n: c.scheme.name for n, c in chosen.items()},
        table=table,
        probe_method="+".join(sorted({m for m, _ in probes.values()})),
        probe_samples=int(ids.shape[0]),
        seconds=time.perf_counter() - t0,
        search=search,
        search_log=log,
    )
