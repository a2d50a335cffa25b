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
# AWQ's scales before GPTQ gave the lowest perplexity and KL at w4g64 of the methods
# that quantize the default model within best-4bit's time budget; learned rounding does
# a little better at 4 bits but takes several times as long (measured in BENCHMARKS.md).
PRESETS.register("best-4bit")(
    Preset(
        {"method": "awq+gptq", "scheme": "w4g64"},
        4.5,
        "AWQ's activation-aware scales folded in, then GPTQ, 4-bit groups of 64",
    )
)
# Learned rounding fitted block by block from GPTQ's solution gave the lowest perplexity
# of every method at 3 and 2 bits, by the widest margin at 2 bits, at the cost of the
# longest quantization (measured in BENCHMARKS.md, "Methods and combinations").
PRESETS.register("best-3bit")(
    Preset(
        {"method": "learned-round", "scheme": "w3g64"},
        3.5,
        "GPTQ, then AutoRound-style learned rounding fitted block by block, 3-bit groups of 64",
    )
)
PRESETS.register("best-2bit")(
    Preset(
        {"method": "learned-round", "scheme": "w2g64"},
        2.5,
        "GPTQ, then AutoRound-style learned rounding fitted block by block, 2-bit groups of 64",
    )
)


def preset_recipe(name: str) -> dict[str, Any]:
    """A copy of the preset's recipe dict (for ``Recipe.from_dict``)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in PRESETS.get(name).recipe.items()}
