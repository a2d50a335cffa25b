"""NVFP4: FP4 E2M1 codes, one FP8 E4M3 scale per 16 weights, and one float32 scale per
tensor (NVIDIA's Blackwell format, as compressed-tensors stores it).

The tensor scale is stored as the divisor ``global = 448 * 6 / amax(W)`` (E4M3's
largest value times E2M1's): a block scale ``b`` (E4M3) means ``b / global``, and a
weight decodes to ``e2m1[code] * (float32(b) / global)``. Block scales are rounded to
E4M3 before the codes are chosen, as the hardware will see them. Because the tensor
scale depends on the whole matrix, parameters are chosen once per matrix (the
``whole_matrix_params`` trait: GPTQ's per-group re-fitting is refused).

Spelling: ``nvfp4``.
"""

from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import Params, register_format
from lmpress.formats.grid import GridFormat
from lmpress.formats.minifloat import E2M1, E4M3, minifloat_values

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

BLOCK = 16


@register_format("nvfp4")
class NVFP4Format(GridFormat):
    """E2M1 codes times an E4M3 block scale divided by a float32 tensor scale."""

    param_names: ClassVar[tuple[str, ...]] = ("scale", "global")
    traits: ClassVar[frozenset[str]] = frozenset({"grid", "whole_matrix_params"})
    scale_dtypes: ClassVar[tuple[str, ...]] = ("float8_e4m3",)
    granularities: ClassVar[tuple[str, ...]] = ("group",)

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.bits != 4 or scheme.group_size != BLOCK:
            raise LmpressError(f"nvfp4 is 4-bit codes in blocks of {BLOCK}")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        if spec != "nvfp4":
            return None
        return Scheme(
            bits=4,
            granularity="group",
            group_size=BLOCK,
            symmetric=True,
            scale_dtype="float8_e4m3",
            format="nvfp4",
        )

    @classmethod
    def spellings(cls) -> str:
        return "nvfp4"

    def scheme_name(self) -> str:
        return "nvfp4"

    def levels(self) -> torch.Tensor:
        return minifloat_values(E2M1)

    # -- scales --------------------------------------------------------------------------
    @staticmethod
    def tensor_divisor(w: torch.Tensor) -> torch.Tensor:
        """``global`` for ``w`` (float32 scalar tensor): ``448 * 6 / amax``, 1 when all 0."""
        amax = w.abs().amax().to(torch.float32)
        if float(amax) == 0:
            return torch.ones(())
        return (E4M3.max * E2M1.max) / amax

    @staticmethod
    def block_scale(scale: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
        """Effective scales (float32) rounded so that ``scale * divisor`` is an E4M3 value
        (float32 out: ``float32(e4m3) / divisor``)."""
        b = (scale * divisor).clamp(0, E4M3.max).to(torch.float8_e4m3fn).to(torch.float32)
        return b / divisor

    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        div = self.tensor_divisor(w)
        g, imp = self.group_view(w, importance)
        amax = g.abs().amax(-1)
        ratios = [1.0 - 0.5 * k / 19 for k in range(20)] if search else [1.0]
        gdiv = div.expand_as(amax)
        cands = [
            {"scale": self.block_scale(amax * r / E2M1.max, div), "global": gdiv} for r in ratios
        ]
        if len(cands) == 1:
            return {k: v.clone() for k, v in cands[0].items()}
        return self.best_of(g, imp, cands)[0]

    def storable_params(self, params: Params) -> Params:
        out = dict(params)
        div = params["global"].reshape(-1)[0]
        out["scale"] = self.block_scale(params["scale"], div)
        return out

    # -- storage -------------------------------------------------------------------------
    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        from lmpress.packing.components import Component

        comps = super().components(out_features, in_features)
        comps["global_scale"] = Component((1,), torch.float32, "params")
        return comps

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        div = params["global"]
        if not bool((div == div.reshape(-1)[0]).all()):
            raise LmpressError("nvfp4 has one tensor scale per matrix; got several")
        d = div.reshape(-1)[0].to(torch.float32)
        return {
            "qweight": pack_codes(codes.to(torch.int64), 4),
            "scales": (params["scale"] * d).to(torch.float8_e4m3fn).contiguous(),
            "global_scale": d.reshape(1).clone(),
        }

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        d = tensors["global_scale"].to(torch.float32)
        scale = tensors["scales"].to(torch.float32) / d
        return {"scale": scale, "global": d.expand_as(scale)}

    def concat_params(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        g = parts[0]["global_scale"]
        if any(not torch.equal(p["global_scale"], g) for p in parts):
            raise LmpressError(
                "nvfp4 weights with different tensor scales cannot share rows; keep them apart"
            )
        return {"scales": torch.cat([p["scales"] for p in parts]), "global_scale": g}
