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
# (KL 0.081) against plain GPTQ's 23.01 (KL 0.100) and LeanQuant's 23.44 at w4g64 in
# about 6 minutes for the whole command; learned rounding may do better at 4 bits but
# takes about 16 minutes, over best-4bit's 10-minute limit (issue 3).
PRESETS.register("best-4bit")(
    Preset(
        {"method": "awq+gptq", "scheme": "w4g64"},
        4.5,
        "AWQ's activation-aware scales folded in, then GPTQ, 4-bit groups of 64",
    )
)
# Learned rounding fitted block by block from GPTQ's solution measured 26.84 (KL 0.270)
# at w3g64 against AWQ+GPTQ's 29.41 (KL 0.351), and 51.40 (KL 0.916) at w2g64 against
# LeanQuant w2g48's 85.16 and GPTQ w2g64's 86.00, for about 18 minutes of quantization.
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
