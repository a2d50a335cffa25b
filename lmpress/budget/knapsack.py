"""Multiple-choice knapsack: one option per item, least summed cost under a weight budget."""

import math

import numpy as np

from lmpress.errors import LmpressError


def knapsack(
    costs: list[list[float]],
    weights: list[list[float]],
    budget: float,
    resolution: int = 20000,
) -> list[int]:
    """The option index per item minimising ``sum_i costs[i][c_i]`` subject to
    ``sum_i weights[i][c_i] <= budget``.

    ``costs[i]`` and ``weights[i]`` are item ``i``'s options (same length, weights >= 0,
    e.g. bits stored; budget > 0). Exact dynamic programme over the budget cut into
    ``R = max(resolution, 200 * items)`` units; each option's weight is rounded *up* to
    whole units, so the answer always fits the budget, and it is optimal up to that
    rounding (at most ``items / R`` of the budget can go unused). Raises
    :class:`LmpressError` when even the lightest options exceed the budget. Time
    ``O(items * options * R)``, memory ``O(items * R)``.
    """
    if len(costs) != len(weights) or any(
        len(c) != len(w) or not c for c, w in zip(costs, weights, strict=False)
    ):
        raise ValueError("every item needs as many costs as weights, and at least one option")
    if not budget > 0 or any(x < 0 for w in weights for x in w):
        raise ValueError("the budget must be positive and every weight non-negative")
    lightest = sum(min(w) for w in weights)
    if lightest > budget * (1 + 1e-12):
        raise LmpressError(
            f"the budget ({budget:.6g}) is below the lightest choice of every module "
            f"({lightest:.6g}); raise the budget or add smaller candidates"
        )
    # each item's rounding leaves at most one unit unused: keep that under 0.5% of
    # the budget however many items there are
    R = max(resolution, 200 * len(costs))
    unit = budget / R
    # best[j]: least cost of the items so far using at most j units
    best = np.zeros(R + 1, dtype=np.float64)
    choice = np.zeros((len(costs), R + 1), dtype=np.int16)
    for i, (cs, ws) in enumerate(zip(costs, weights, strict=True)):
        new = np.full(R + 1, np.inf)
        pick = np.zeros(R + 1, dtype=np.int16)
        for o, (c, w) in enumerate(zip(cs, ws, strict=True)):
            u = math.ceil(w / unit - 1e-9)
            if u > R or not math.isfinite(c):
                continue
            cand = np.full(R + 1, np.inf)
            cand[u:] = best[: R + 1 - u] + c
            better = cand < new
            new[better] = cand[better]
            pick[better] = o
        best, choice[i] = new, pick
    if not math.isfinite(best[R]):
        raise LmpressError(
            f"no choice of candidates fits the budget ({budget:.6g}) at this resolution; "
            "raise the budget a little or add smaller candidates"
        )
    out = [0] * len(costs)
    j = R
    for i in range(len(costs) - 1, -1, -1):
        o = int(choice[i, j])
        out[i] = o
        j -= math.ceil(weights[i][o] / unit - 1e-9)
    return out
