"""IQ4_NL's grid: 16 fixed non-uniform int8 levels times a signed fp16 scale per group
(llama.cpp's ``IQ4_NL`` type, 32 weights per block; Kawrakow's non-linear 4-bit quants).

The table is ``kvalues_iq4nl`` as published in llama.cpp's ``ggml/src/ggml-common.h``
(and gguf-py's ``gguf.quants.IQ4_NL.kvalues``), unnormalised: ggml decodes a weight as
``float32(fp16 d) * float32(kvalues[code])``, which is exactly lmpress's
``table[code] * scale`` with ``scale = d``, so a ``g32`` (or any group a multiple of 32,
or per channel) fp16 scheme exports to IQ4_NL bit for bit.

The table is lopsided (-127 ... 113), so, as ggml's own quantizer does, the scale is
signed: a group whose largest magnitude is positive gets a negative scale, putting that
weight on the long (-127) end instead of clipping it at 113. Parameters are otherwise
chosen as every grid format's: min-max, or the search over 20 shrunk ranges.

Spellings: ``iq4nlg32`` (ggml's block), ``iq4nlg64``, ``iq4nl`` (per channel),
``iq4nlg32:bf16``.
"""

from typing import TYPE_CHECKING

import torch

from lmpress.errors import LmpressError
from lmpress.formats import affine
from lmpress.formats.base import Params, register_format
from lmpress.formats.grid import ScaledGridFormat

if TYPE_CHECKING:
    pass


# kvalues_iq4nl (llama.cpp ggml/src/ggml-common.h), in code order
IQ4NL_LEVELS = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


@register_format("iq4nl")
class IQ4NLFormat(ScaledGridFormat):
    """IQ4_NL codes times a signed per-group scale."""

    prefix = "iq4nl"
    examples = "iq4nlg32, iq4nlg64, iq4nl"

    def levels(self) -> torch.Tensor:
        return torch.tensor(IQ4NL_LEVELS, dtype=torch.float32)

    # -- signed scales ---------------------------------------------------------------------
    def storable_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """``scale`` (float32, any sign; 0 for an all-zero group, which becomes 1) rounded
        to its fp16/bf16 storage, keeping its sign (float32 out)."""
        sign = torch.where(scale < 0, -1.0, 1.0)
        return sign * affine.storable_scale(scale.abs(), self.scheme)

    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        """``{"scale": [P, G]}`` for ``w [R, C]`` float32: the grid formats' candidates,
        negated where the group's largest magnitude is positive (so it meets -127)."""
        g, imp = self.group_view(w, importance)
        amax = g.abs().amax(-1)
        peak = torch.gather(g, -1, g.abs().argmax(-1, keepdim=True)).squeeze(-1)
        sign = torch.where(peak > 0, -1.0, 1.0)
        cands = [sign * c for c in self.scale_candidates(amax, search)]
        if len(cands) == 1:
            return {"scale": cands[0]}
        return self.best_of(g, imp, [{"scale": c} for c in cands])[0]

    def encode(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        if offset is not None:
            raise LmpressError(f"format {self.name!r} has no rounding offsets")
        s = params["scale"]
        # the base class treats a non-positive scale as unset; here only 0 is
        return self._nearest().encode(w / torch.where(s != 0, s, torch.ones_like(s)))
