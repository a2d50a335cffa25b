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
# Chosen by the benchmark (BENCHMARKS.md): plain GPTQ (its E[x^2]-weighted grid) measured
# 23.01 against LeanQuant's 23.44 at w4g64 and 30.21 against 31.84 at w3g64, although
# LeanQuant's layer errors are lower. At <= 2.5 bits LeanQuant w2g48 (85.16) beat GPTQ
# w2g64 (86.00); GPTQ w2g32 (70.75) stores 2.56 bits/weight, over the budget.
# AWQ before GPTQ raised GPTQ's layer error on this model, so no preset uses it yet.
PRESETS.register("best-4bit")(
    Preset(
        {"method": "gptq", "scheme": "w4g64"},
        4.5,
        "GPTQ with its Hessian-weighted clipping search, 4-bit groups of 64",
    )
)
PRESETS.register("best-3bit")(
    Preset(
        {"method": "gptq", "scheme": "w3g64"},
        3.5,
        "GPTQ with its Hessian-weighted clipping search, 3-bit groups of 64",
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
