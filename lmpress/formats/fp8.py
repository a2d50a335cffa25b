"""FP8 weights: E4M3 (or E5M2) codes with a float32 scale per output channel, per tensor
or per 2-D block (OCP 8-bit floating point; the 128 x 128 blocks of DeepSeek-V3's FP8
training, Liu et al. 2024).

Spellings: ``fp8`` (E4M3, per channel), ``fp8:e5m2``, ``fp8gt`` (per tensor),
``fp8b128`` (one scale per 128 x 128 block).
"""

import re
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import Params, register_format
from lmpress.formats.grid import GridFormat, parse_group
from lmpress.formats.minifloat import E4M3, E5M2, minifloat_values

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

_SHORT = re.compile(r"^fp8(?P<g>gt|b\d+)?(?::(?P<v>e4m3|e5m2))?$")
ELEMENTS = {"": E4M3, "e4m3": E4M3, "e5m2": E5M2}


@register_format("fp8")
class FP8Format(GridFormat):
    """8-bit float codes (the FP8 bit pattern itself) times a float32 scale."""

    scale_dtypes: ClassVar[tuple[str, ...]] = ("float32",)
    granularities: ClassVar[tuple[str, ...]] = ("channel", "tensor", "group")
    blocks: ClassVar[bool] = True

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.bits != 8:
            raise LmpressError(f"fp8 codes have 8 bits, not {scheme.bits}")
        if scheme.variant not in ("", "e5m2"):
            raise LmpressError(f"fp8 elements are e4m3 or e5m2, not {scheme.variant!r}")
        if scheme.granularity == "group" and scheme.block_rows != scheme.group_size:
            raise LmpressError("fp8 scales are per channel, per tensor or per square block")
        if scheme.block_rows and scheme.granularity != "group":
            raise LmpressError("fp8 blocks need a group size (fp8b128)")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        m = _SHORT.match(spec)
        if not m:
            return None
        g = m["g"] or ""
        variant = "" if m["v"] in (None, "e4m3") else m["v"]
        if g.startswith("b"):
            n = int(g[1:])
            if n <= 0:
                raise LmpressError(f"block size must be positive in {spec!r}, e.g. fp8b128")
            fields = {"granularity": "group", "group_size": n, "block_rows": n}
        else:
            fields = parse_group(g)
        return Scheme(
            bits=8, format="fp8", symmetric=True, scale_dtype="float32", variant=variant, **fields
        )

    @classmethod
    def spellings(cls) -> str:
        return "fp8, fp8:e5m2, fp8gt, fp8b128"

    def scheme_name(self) -> str:
        s = self.scheme
        g = f"b{s.group_size}" if s.block_rows else self._group_suffix()
        return f"fp8{g}" + (f":{s.variant}" if s.variant else "")

    def levels(self) -> torch.Tensor:
        return minifloat_values(ELEMENTS[self.scheme.variant])

    # -- 2-D blocks -------------------------------------------------------------------
    def param_rows(self, out_features: int) -> int:
        b = self.scheme.block_rows
        return -(-out_features // b) if b else super().param_rows(out_features)

    def group_view(
        self, w: torch.Tensor, importance: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.scheme.block_rows
        if not b:
            return super().group_view(w, importance)
        imp = torch.ones_like(w) if importance is None else importance.float().expand(w.shape)
        return _blocks(w, b), _blocks(imp.contiguous(), b, pad_value=0.0)

    def expand(self, params: Params, in_features: int, out_features: int | None = None) -> Params:
        b = self.scheme.block_rows
        if not b:
            return super().expand(params, in_features, out_features)
        if out_features is None:
            raise ValueError("fp8 block parameters need the row count to expand")
        return {
            k: v.repeat_interleave(b, 0)[:out_features].repeat_interleave(b, 1)[:, :in_features]
            for k, v in params.items()
        }

    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        comps = super().components(out_features, in_features)
        if self.scheme.block_rows:
            from dataclasses import replace

            c = comps["scales"]
            comps["scales"] = replace(c, shape=(self.param_rows(out_features), c.shape[1]))
        return comps

    def concat_params(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self.scheme.block_rows:
            # a matrix whose rows are not a multiple of the block ends mid-block
            raise LmpressError("fp8 block scales cannot be stacked by rows; keep them apart")
        return super().concat_params(parts)


def _blocks(w: torch.Tensor, b: int, pad_value: float | None = None) -> torch.Tensor:
    """``w [R, C]`` as ``[ceil(R/b), ceil(C/b), b*b]`` blocks, padded with zeros (or
    ``pad_value``)."""
    rows, cols = w.shape
    pr, pc = (-rows) % b, (-cols) % b
    if pr or pc:
        w = torch.nn.functional.pad(w, (0, pc, 0, pr), value=pad_value or 0.0)
    r, c = w.shape
    return w.reshape(r // b, b, c // b, b).permute(0, 2, 1, 3).reshape(r // b, c // b, b * b)
