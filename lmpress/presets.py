"""Named recipes: ``lmpress quantize MODEL --preset best-3bit -o OUT``.

Each preset is an ordinary recipe (method, transforms, scheme, options), chosen
by the benchmark (BENCHMARKS.md, "Presets") as the best measured combination under
its bit budget. Flags given with ``--preset`` (``--scheme``, ``--method-arg``,
``--override``) change it like they change a recipe file.
"""

from dataclasses import dataclass
from typing import Any

from lmpress.registry import Registry


@dataclass(frozen=True)
class Preset:
    recipe: dict[str, Any]
    # bits-per-weight budget the preset is built to stay under (quantized modules)
    budget: float | None
    summary: str


PRESETS: Registry[Preset] = Registry("preset")

PRESETS.register("fast")(
    Preset(
        {"method": "rtn", "scheme": "w4g64"},
        4.5,
        "no calibration data: min-max round to nearest, 4-bit groups of 64",
    )
)
# Chosen by the benchmark (BENCHMARKS.md). AWQ's scales before GPTQ measured 22.45
# (KL 0.081) against plain GPTQ's 23.01 (KL 0.100) and LeanQuant's 23.44 at w4g64, and
# 29.41 against 30.21 (LeanQuant 31.84) at w3g64, in 6-7 minutes for the whole command;
# at w4g128 AWQ did not pay (23.51 against 23.22), so the choice is per scheme. At
# <= 2.5 bits LeanQuant w2g48 (85.16) beat GPTQ w2g64 (86.00); GPTQ w2g32 (70.75)
# stores 2.56 bits/weight, over the budget.
PRESETS.register("best-4bit")(
    Preset(
        {"method": "awq+gptq", "scheme": "w4g64"},
        4.5,
        "AWQ's activation-aware scales folded in, then GPTQ, 4-bit groups of 64",
    )
)
PRESETS.register("best-3bit")(
    Preset(
        {"method": "awq+gptq", "scheme": "w3g64"},
        3.5,
        "AWQ's activation-aware scales folded in, then GPTQ, 3-bit groups of 64",
    )
)
PRESETS.register("best-2bit")(
    Preset(
        {"method": "leanquant", "scheme": "w2g48"},
        2.5,
        "GPTQ with LeanQuant's loss-aware grid, 2-bit groups of 48",
    )
)


def preset_recipe(name: str) -> dict[str, Any]:
    """A copy of the preset's recipe dict (for ``Recipe.from_dict``)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in PRESETS.get(name).recipe.items()}
