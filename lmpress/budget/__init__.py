"""Bits where they matter: per-module sensitivity and allocation under a bit budget.

``sensitivity`` measures, for every quantizable module and candidate scheme, the bits
the module would store and the loss increase its quantization error predicts;
``knapsack`` picks one candidate per module to minimise the summed prediction under a
budget; ``allocate`` turns the choice into an ordinary recipe (overrides per module)
that any method then runs.
"""

from lmpress.budget.allocate import DEFAULT_CANDIDATES, Allocation, allocate
from lmpress.budget.knapsack import knapsack

__all__ = ["DEFAULT_CANDIDATES", "Allocation", "allocate", "knapsack"]
