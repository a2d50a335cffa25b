"""Evolutionary search over per-module schemes on measured KL (EvoPress; Sieberling et
al., 2024).

The knapsack trusts that module costs add up; they do not quite (errors of successive
layers compound or cancel). EvoPress corrects that by measuring: starting from an
assignment, each generation makes offspring by *level switches* (one module one
candidate up in bits, another one down, kept only if the budget still holds),
ranks them in stages of growing calibration size (many offspring on few tokens, the
best few on more) by the KL divergence of the model's next-token distribution from
the float model's, and keeps the best if it beats its parent on the same tokens.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lmpress.models.arch import linear_weight
from lmpress.packing.packed import PackedWeight


@dataclass
class SearchLog:
    """What the search did: the fitness of the parent after each generation
    (final-stage KL, nats per token), and how many offspring improved on it."""

    fitness: list[float]
    accepted: int
    evaluations: int


class _Installer:
    """Keeps the model's planned linears at the dequantized weights of a choice."""

    def __init__(self, model: nn.Module, db: dict[str, list[PackedWeight]]) -> None:
        self.mods = {n: model.get_submodule(n) for n in db}
        self.db = db
        self.floats = {n: linear_weight(m).detach().clone() for n, m in self.mods.items()}
        self.current: dict[str, int] = {}

    def install(self, choice: dict[str, int]) -> None:
        for n, i in choice.items():
            if self.current.get(n) != i:
                w = linear_weight(self.mods[n])
                w.copy_(self.db[n][i].dequantize().to(w.dtype))
                self.current[n] = i

    def restore(self) -> None:
        for n, m in self.mods.items():
            linear_weight(m).copy_(self.floats[n])
        self.current = {}


def _kl(model: nn.Module, ids: torch.Tensor, base: list[torch.Tensor], batch: int) -> float:
    """Mean KL(base || model) per predicted token over ``ids`` (int64 [n, seq]);
    ``base``: the float model's log-probabilities per batch, float16."""
    total, count = 0.0, 0
    for k, i in enumerate(range(0, ids.shape[0], batch)):
        lq = F.log_softmax(model(ids[i : i + batch], use_cache=False).logits.float(), dim=-1)
        lb = base[k].float()
        total += float((lb.exp() * (lb - lq)).sum())
        count += lq.shape[0] * lq.shape[1]
    return total / count


@torch.no_grad()
def evolve(
    model: nn.Module,
    db: dict[str, list[PackedWeight]],
    bits: dict[str, list[int]],
    start: dict[str, int],
    budget: float,
    ids: torch.Tensor,
    generations: int = 40,
    offspring: int = 12,
    survivors: int = 2,
    first_samples: int = 2,
    mutations: int = 2,
    batch_size: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict[str, int], SearchLog]:
    """An assignment (module -> index into its candidates) within ``budget`` total bits
    whose measured KL on ``ids`` is at most that of ``start``.

    ``db[name][i]`` is module ``name``'s packed weight at candidate ``i`` and
    ``bits[name][i]`` the bits it stores; candidates are ordered by ``bits``. Offspring
    are ranked on the first ``first_samples`` samples of ``ids`` (int64 ``[n, seq]``),
    the best ``survivors`` and the parent then on all of them. The model's weights are
    restored to float on return.
    """
    g = torch.Generator().manual_seed(seed)
    names = list(db)
    order = {n: sorted(range(len(bits[n])), key=lambda i: bits[n][i]) for n in names}
    used = sum(bits[n][start[n]] for n in names)
    if used > budget:
        raise ValueError("the starting assignment exceeds the budget")
    inst = _Installer(model, db)
    was = model.training
    model.eval()
    try:
        inst.restore()
        base = [
            F.log_softmax(model(ids[i : i + batch_size], use_cache=False).logits.float(), -1).half()
            for i in range(0, ids.shape[0], batch_size)
        ]
        nb_first = -(-first_samples // batch_size)
        first_ids = ids[: nb_first * batch_size]
        evaluations = 0

        def fitness(choice: dict[str, int], full: bool) -> float:
            nonlocal evaluations
            evaluations += 1
            inst.install(choice)
            if full:
                return _kl(model, ids, base, batch_size)
            return _kl(model, first_ids, base[:nb_first], batch_size)

        parent = dict(start)
        parent_fit = fitness(parent, True)
        log = SearchLog([parent_fit], 0, 0)

        def mutate(choice: dict[str, int]) -> dict[str, int] | None:
            child = dict(choice)
            total = sum(bits[n][child[n]] for n in names)
            for _ in range(mutations):
                up, down = (names[int(i)] for i in torch.randint(len(names), (2,), generator=g))
                if up == down:
                    continue
                ou, od = order[up], order[down]
                pu, pd = ou.index(child[up]), od.index(child[down])
                if pu + 1 >= len(ou) or pd == 0:
                    continue
                new_total = (
                    total
                    - bits[up][child[up]]
                    + bits[up][ou[pu + 1]]
                    - bits[down][child[down]]
                    + bits[down][od[pd - 1]]
                )
                child[up], child[down] = ou[pu + 1], od[pd - 1]
                total = new_total
            if total > budget or child == choice:
                return None
            return child

        bar = tqdm(range(generations), desc="evopress", unit="gen", disable=not progress)
        for _ in bar:
            kids = []
            tries = 0
            while len(kids) < offspring and tries < 20 * offspring:
                tries += 1
                kid = mutate(parent)
                if kid is not None:
                    kids.append(kid)
            if not kids:
                break
            ranked = sorted(kids, key=lambda k: fitness(k, False))[:survivors]
            scored = [(fitness(k, True), k) for k in ranked]
            best_fit, best = min(scored, key=lambda t: t[0])
            if best_fit < parent_fit:
                parent, parent_fit = best, best_fit
                log.accepted += 1
            log.fitness.append(parent_fit)
            bar.set_postfix(kl=f"{parent_fit:.4f}")
        log.evaluations = evaluations
        return parent, log
    finally:
        inst.restore()
        model.train(was)
