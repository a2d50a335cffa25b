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
# GPTQ with LeanQuant's loss-aware grid measured best per layer; AWQ scales before it
# raised GPTQ's layer error on this model (see README), so the best-* presets skip AWQ.
PRESETS.register("best-4bit")(
    Preset(
        {"method": "leanquant", "scheme": "w4g64"},
        4.5,
        "GPTQ with LeanQuant's loss-aware grid, 4-bit groups of 64",
    )
)
PRESETS.register("best-3bit")(
    Preset(
        {"method": "leanquant", "scheme": "w3g64"},
        3.5,
        "GPTQ with LeanQuant's loss-aware grid, 3-bit groups of 64",
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
