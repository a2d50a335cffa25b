"""Mixed 4-bit datatypes per group (BitMoD, Chen et al. 2025, "BitMoD: Bit-serial
Mixture-of-Datatype LLM Acceleration"): every group picks, by its rounding error, one
of a few 16-value grids and says which in a 2-bit tag, stored packed beside its fp16
scale. The grids here: the symmetric integer grid, FP4 E2M1 with its redundant ``-0``
turned into ``+5`` or into ``-5`` (BitMoD's "extra value" idea; the value is lmpress's
choice), and NF4.

Spellings: ``mix4g64``, ``mix4g128``.
"""

import re
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import Params, register_format
from lmpress.formats.grid import DTYPES, GridFormat, KeyedTables, parse_group
from lmpress.formats.minifloat import E2M1, minifloat_values
from lmpress.formats.nf4 import NF4_LEVELS

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

_SHORT = re.compile(r"^mix4(?P<g>g\d+)?(?::(?P<dt>fp16|bf16))?$")
TAG_BITS = 2


def _fp4_with(extra: float) -> torch.Tensor:
    v = minifloat_values(E2M1).clone()
    v[8] = extra  # code 8 is -0
    return v / v.abs().max()


# tag -> grid (each normalised to a largest magnitude of 1)
GRIDS: dict[float, torch.Tensor] = {
    0.0: (torch.arange(16, dtype=torch.float32) - 8) / 8,
    1.0: _fp4_with(5.0),
    2.0: _fp4_with(-5.0),
    3.0: torch.tensor(NF4_LEVELS, dtype=torch.float32),
}


@register_format("mix")
class MixFormat(GridFormat):
    """Per-group choice of a 16-value grid (2-bit tag) times a per-group scale."""

    param_names: ClassVar[tuple[str, ...]] = ("scale", "kind")
    granularities: ClassVar[tuple[str, ...]] = ("group",)
    _keyed = KeyedTables(GRIDS)

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.bits != 4:
            raise LmpressError(f"mix grids have 4 bits, not {scheme.bits}")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        m = _SHORT.match(spec)
        if not m:
            return None
        fields = parse_group(m["g"] or "g64")
        assert fields is not None
        return Scheme(bits=4, format="mix", symmetric=True, scale_dtype=DTYPES[m["dt"]], **fields)

    @classmethod
    def spellings(cls) -> str:
        return "mix4g64, mix4g128"

    def scheme_name(self) -> str:
        return f"mix4{self._group_suffix()}{self._dtype_suffix()}"

    def levels(self) -> torch.Tensor:
        return GRIDS[0.0]

    def table_max(self) -> float:
        return 1.0

    def encode(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        if offset is not None:
            raise LmpressError("mix has no rounding offsets")
        s = params["scale"]
        return self._keyed.encode(w / torch.where(s > 0, s, torch.ones_like(s)), params["kind"])

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        return self._keyed.decode(codes, params["kind"]) * params["scale"]

    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        g, imp = self.group_view(w, importance)
        amax = g.abs().amax(-1)
        cands = [
            {"scale": s, "kind": torch.full_like(amax, k)}
            for k in GRIDS
            for s in self.scale_candidates(amax, search)
        ]
        return self.best_of(g, imp, cands)[0]

    # -- storage -------------------------------------------------------------------------
    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        from lmpress.packing.bits import packed_row_bytes
        from lmpress.packing.components import Component

        comps = super().components(out_features, in_features)
        p, g = comps["scales"].shape
        comps["kinds"] = Component((1, packed_row_bytes(p * g, TAG_BITS)), torch.uint8, "params")
        return comps

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        out = super().pack(codes, params)
        out["kinds"] = pack_codes(params["kind"].to(torch.int64).reshape(1, -1), TAG_BITS)
        return out

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        from lmpress.packing.bits import unpack_codes

        scale = self.unpack_scale(tensors["scales"])
        p, g = scale.shape
        kind = unpack_codes(tensors["kinds"], TAG_BITS, p * g).reshape(p, g).to(torch.float32)
        return {"scale": scale, "kind": kind}

    def concat_params(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        kinds = torch.cat([self.unpack_params(p)["kind"] for p in parts]).to(torch.int64)
        return {
            "scales": torch.cat([p["scales"] for p in parts]),
            "kinds": pack_codes(kinds.reshape(1, -1), TAG_BITS),
        }

    def kernel_tables(
        self, tensors: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        params = self.unpack_params(tensors)
        tables = torch.stack([GRIDS[k] for k in sorted(GRIDS)])
        return tables, params["kind"].to(torch.int32), params["scale"]
