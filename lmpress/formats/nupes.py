"""NUPES power grids: 16 levels ``sign(u) * |u|^p`` for the uniform ``u = (q - 8) / 7``,
times a per-group scale, with the power ``p`` searched per output channel (Yvinec et
al. 2023, "NUPES: Non-Uniform Post-Training Quantization via Power Exponent Search",
whose quantizer ``sign(w) |w|^a`` followed by a uniform grid is this grid with
``p = 1 / a``). ``p > 1`` packs levels near zero, where most weights are.

Spellings: ``nupes4g64``, ``nupes4g128``, ``nupes4`` (per channel scales).
"""

import re
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import Params, register_format
from lmpress.formats.grid import DTYPES, GridFormat, KeyedTables, parse_group

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

_SHORT = re.compile(r"^nupes4(?P<g>g\d+)?(?::(?P<dt>fp16|bf16))?$")
# the powers searched (multiples of 1/8: exact in the fp16 they are stored in)
POWERS = tuple(1.0 + i / 8 for i in range(9))


def power_levels(p: float) -> torch.Tensor:
    """The 16 levels ``sign(u) |u|^p``, ``u = (q - 8) / 7``, float32 ``[16]``."""
    u = (torch.arange(16, dtype=torch.float32) - 8) / 7
    return torch.sign(u) * u.abs().pow(p)


@register_format("nupes")
class NupesFormat(GridFormat):
    """Power-grid codes times a per-group scale; the power is per output channel."""

    param_names: ClassVar[tuple[str, ...]] = ("scale", "power")
    _keyed = KeyedTables({p: power_levels(p) for p in POWERS})

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.bits != 4:
            raise LmpressError(f"nupes grids have 4 bits, not {scheme.bits}")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        m = _SHORT.match(spec)
        if not m:
            return None
        fields = parse_group(m["g"] or "")
        assert fields is not None
        return Scheme(bits=4, format="nupes", symmetric=True, scale_dtype=DTYPES[m["dt"]], **fields)

    @classmethod
    def spellings(cls) -> str:
        return "nupes4g64, nupes4"

    def scheme_name(self) -> str:
        return f"nupes4{self._group_suffix()}{self._dtype_suffix()}"

    def levels(self) -> torch.Tensor:
        return power_levels(1.0)

    def table_max(self) -> float:
        return 1.0  # the positive end; the negative end has one level more, as int4's

    # -- numerics ------------------------------------------------------------------------
    def encode(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        if offset is not None:
            raise LmpressError("nupes has no rounding offsets")
        s = params["scale"]
        return self._keyed.encode(w / torch.where(s > 0, s, torch.ones_like(s)), params["power"])

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        return self._keyed.decode(codes, params["power"]) * params["scale"]

    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        """Per row, the power of least error summed over the row's groups, each group
        with its best scale for that power."""
        g, imp = self.group_view(w, importance)
        amax = g.abs().amax(-1)
        best: Params = {}
        best_err = None
        for p in POWERS:
            power = torch.full_like(amax, p)
            cands = [{"scale": s, "power": power} for s in self.scale_candidates(amax, search)]
            params, err = self.best_of(g, imp, cands)
            row_err = err.sum(-1, keepdim=True)
            if best_err is None:
                best, best_err = params, row_err
                continue
            better = row_err < best_err
            best_err = torch.where(better, row_err, best_err)
            best = {k: torch.where(better, v, best[k]) for k, v in params.items()}
        return best

    # -- storage -------------------------------------------------------------------------
    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        from lmpress.packing.components import Component

        comps = super().components(out_features, in_features)
        comps["power"] = Component((self.param_rows(out_features), 1), torch.float16, "params")
        return comps

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        out = super().pack(codes, params)
        out["power"] = params["power"][:, :1].to(torch.float16).contiguous()
        return out

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        scale = self.unpack_scale(tensors["scales"])
        return {"scale": scale, "power": tensors["power"].to(torch.float32).expand_as(scale)}

    def kernel_tables(
        self, tensors: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        params = self.unpack_params(tensors)
        powers = params["power"][:, 0]
        keys = sorted(set(powers.tolist()))
        tables = torch.stack([self._keyed.tables[p] for p in keys])
        lookup = {p: i for i, p in enumerate(keys)}
        row = torch.tensor([lookup[p] for p in powers.tolist()], dtype=torch.int32)
        return tables, row.unsqueeze(1).expand_as(params["scale"]).contiguous(), params["scale"]
