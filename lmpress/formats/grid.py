"""Grid formats: a code indexes a table of values, and decodes to ``table[code] * scale``.

Every non-integer format of lmpress is one: the float element formats (FP8, FP4, MX,
NVFP4) and NormalFloat have one fixed table shared by every group; the learned and
searched grids (``lut``, ``nupes``, ``mix``) have a table per channel, per group or per
group type, carried in their parameters. :class:`GridFormat` implements the operations
once from two things a subclass states: the table (:meth:`GridFormat.table`) and how a
scale is stored (the scheme's ``scale_dtype``).

Parameters are ``{"scale": [P, G]}`` (float32, the value a group's table is multiplied
by) plus what a subclass adds. Choosing them: min-max puts the group's largest magnitude
on the table's largest entry; the search tries shrunk ranges and keeps, per group, the
one of least ``sum(importance * |w - q(w)|^2.4)``, with each candidate scale rounded to
storage before its codes are chosen, as the hardware will see it.

For the CPU kernels a grid format describes its decoding as tables and scales
(:meth:`GridFormat.kernel_tables`): ``value(n, k) = tables[index[n, g]][code] * scale[n, g]``
with ``g`` the group of column ``k``, bit for bit what :meth:`decode` computes.
"""

import math
import re
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats import affine
from lmpress.formats.base import Format, Params
from lmpress.formats.minifloat import NearestTable, e8m0_exponent, e8m0_scale

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

# scale storage dtype name -> torch dtype of the stored tensor (E8M0 as its exponent byte)
GRID_SCALE_STORAGE = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "e8m0": torch.uint8,
    "float8_e4m3": torch.float8_e4m3fn,
}
# the error a range search minimises: |w - q(w)|^NORM, as the integer search
NORM = 2.4
# rows encoded at once where each weight has its own table (bounds [rows, in, V] memory)
_CHUNK_ELEMS = 1 << 24


class GridFormat(Format):
    """Codes of ``scheme.bits`` bits indexing a table; subclasses give the table."""

    param_names: ClassVar[tuple[str, ...]] = ("scale",)
    traits: ClassVar[frozenset[str]] = frozenset({"grid"})
    # scale dtypes this format may store (the first is its default)
    scale_dtypes: ClassVar[tuple[str, ...]] = ("float16", "bfloat16")
    granularities: ClassVar[tuple[str, ...]] = ("group", "channel")
    # whether scales may span 2-D blocks of rows (``Scheme.block_rows``)
    blocks: ClassVar[bool] = False

    # -- the table -------------------------------------------------------------------
    def levels(self) -> torch.Tensor:
        """The fixed table ``[2**bits]`` float32 (NaN: a code never produced)."""
        raise NotImplementedError

    def table(self, params: Params) -> torch.Tensor:
        """The table for broadcastable ``params``: ``[V]`` when shared by every group, else
        ``[*shape, V]`` with the parameters' broadcast shape."""
        return self.levels()

    def table_max(self) -> float:
        """The largest magnitude of the (normalised) table: min-max maps a group's
        largest weight to it."""
        v = self.levels()
        return float(v[torch.isfinite(v)].abs().max())

    def _nearest(self) -> NearestTable:
        cached = self.__dict__.get("_nearest_table")
        if cached is None:
            cached = self.__dict__["_nearest_table"] = NearestTable(self.levels())
        return cached

    # -- schemes ---------------------------------------------------------------------
    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.scale_dtype not in cls.scale_dtypes:
            raise LmpressError(
                f"format {cls.name!r} stores scales as {' or '.join(cls.scale_dtypes)}, "
                f"not {scheme.scale_dtype}"
            )
        if scheme.granularity not in cls.granularities:
            raise LmpressError(
                f"format {cls.name!r} has scales per {' or '.join(cls.granularities)}, "
                f"not per {scheme.granularity}"
            )
        if scheme.zero_format != "int" or not scheme.symmetric:
            raise LmpressError(f"format {cls.name!r} is symmetric: it has no zero points")
        if scheme.block_rows and not cls.blocks:
            raise LmpressError(f"format {cls.name!r} has no 2-D blocks")

    def _group_suffix(self) -> str:
        s = self.scheme
        return {"tensor": "gt", "channel": ""}.get(s.granularity, f"g{s.group_size}")

    def _dtype_suffix(self) -> str:
        dt = self.scheme.scale_dtype
        return "" if dt == self.scale_dtypes[0] else {"bfloat16": ":bf16"}.get(dt, f":{dt}")

    # -- scales ------------------------------------------------------------------------
    def storable_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """``scale`` (float32, positive or 0) rounded to its storage (float32 out); a zero
        scale (an all-zero group) becomes 1."""
        dt = self.scheme.scale_dtype
        if dt in ("float16", "bfloat16"):
            return affine.storable_scale(scale, self.scheme)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        if dt == "e8m0":
            return e8m0_scale(e8m0_exponent(scale))
        return scale

    def scale_candidates(self, amax: torch.Tensor, search: bool) -> list[torch.Tensor]:
        """Storable scales to try for groups of largest magnitude ``amax [P, G]``."""
        base = amax / self.table_max()
        if not search:
            return [self.storable_scale(base)]
        return [self.storable_scale(base * (1.0 - 0.5 * k / 19)) for k in range(20)]

    # -- numerics ----------------------------------------------------------------------
    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        g, imp = self.group_view(w, importance)
        amax = g.abs().amax(-1)
        cands = self.scale_candidates(amax, search)
        if len(cands) == 1:
            return {"scale": cands[0]}
        return self.best_of(g, imp, [{"scale": c} for c in cands])[0]

    def group_view(
        self, w: torch.Tensor, importance: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``w [R, C]`` as zero-padded groups ``[P, G, L]`` (one per stored scale) and the
        error weights on them (``importance [C]`` per column, or 1; 0 on the padding)."""
        return _groups(w, self.scheme, importance)

    def group_error(self, g: torch.Tensor, params: Params, imp: torch.Tensor) -> torch.Tensor:
        """``sum(imp * |g - q(g)|^2.4)`` per group ``[P, G]`` for groups ``g [P, G, L]``
        under per-group ``params`` (``[P, G]`` each)."""
        p3 = {k: v.unsqueeze(-1) for k, v in params.items()}
        d = self.decode(self.encode(g, p3), p3).sub_(g).abs_().pow_(NORM).mul_(imp)
        return d.sum(-1)

    def encode(
        self, w: torch.Tensor, params: Params, offset: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        if offset is not None:
            raise LmpressError(f"format {self.name!r} has no rounding offsets")
        s = params.get("scale")
        x = w if s is None else w / torch.where(s > 0, s, torch.ones_like(s))
        t = self.table(params)
        if t.dim() == 1:
            return self._nearest().encode(x)
        return _nearest_per_element(x, t)

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        t = self.table(params)
        if t.dim() == 1:
            v = t.to(codes.device)[codes.long()]
        else:
            t = t.expand(*codes.shape, t.shape[-1])
            v = torch.gather(t, -1, codes.long().unsqueeze(-1)).squeeze(-1)
        s = params.get("scale")
        return v if s is None else v * s

    def storable_params(self, params: Params) -> Params:
        out = dict(params)
        out["scale"] = self.storable_scale(params["scale"])
        return out

    def best_of(
        self, g: torch.Tensor, imp: torch.Tensor, candidates: list[Params]
    ) -> tuple[Params, torch.Tensor]:
        """Per group, the candidate (each ``{name: [P, G]}``) of least :meth:`group_error`
        on groups ``g [P, G, L]``, and that error ``[P, G]``."""
        best: Params = {}
        best_err = None
        for cand in candidates:
            err = self.group_error(g, cand, imp)
            if best_err is None:
                best, best_err = {k: v.clone() for k, v in cand.items()}, err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = {k: torch.where(better, v, best[k]) for k, v in cand.items()}
        assert best_err is not None
        return best, best_err

    # -- storage -----------------------------------------------------------------------
    def param_rows(self, out_features: int) -> int:
        return 1 if self.scheme.granularity == "tensor" else out_features

    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        from lmpress.packing.bits import packed_row_bytes
        from lmpress.packing.components import Component

        s = self.scheme
        g = affine.num_groups(in_features, s)
        return {
            "qweight": Component(
                (out_features, packed_row_bytes(in_features, s.bits)), torch.uint8, "codes"
            ),
            "scales": Component(
                (self.param_rows(out_features), g), GRID_SCALE_STORAGE[s.scale_dtype], "params"
            ),
        }

    def pack_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """Storable float32 scales ``[P, G]`` as their stored tensor."""
        dt = self.scheme.scale_dtype
        if dt == "e8m0":
            return e8m0_exponent(scale).to(torch.uint8).contiguous()
        return scale.to(GRID_SCALE_STORAGE[dt]).contiguous()

    def unpack_scale(self, stored: torch.Tensor) -> torch.Tensor:
        if self.scheme.scale_dtype == "e8m0":
            return e8m0_scale(stored)
        return stored.to(torch.float32)

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        return {
            "qweight": pack_codes(codes.to(torch.int64), self.scheme.bits),
            "scales": self.pack_scale(params["scale"]),
        }

    def unpack_codes(self, tensors: dict[str, torch.Tensor], in_features: int) -> torch.Tensor:
        from lmpress.packing.bits import unpack_codes

        return unpack_codes(tensors["qweight"], self.scheme.bits, in_features)

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        return {"scale": self.unpack_scale(tensors["scales"])}

    def concat_params(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    # -- kernels ---------------------------------------------------------------------------
    def kernel_tables(
        self, tensors: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(tables [T, V] float32, index [P, G] int32 or None (table 0 everywhere),
        scale [P, G] float32)`` such that code ``q`` of row ``n``, group ``g`` decodes to
        ``tables[index[n, g], q] * scale[n, g]``, bit for bit :meth:`decode`."""
        params = self.unpack_params(tensors)
        return self.levels().unsqueeze(0), None, params["scale"]


def _groups(
    w: torch.Tensor, scheme: "Scheme", importance: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [R, C]`` as zero-padded groups ``[P, G, L]`` and the error weights on them
    (``importance [C]`` per column, or 1; zero on the padding)."""
    g, mask = affine.group_view(w, scheme)
    if importance is None:
        return g, mask
    imp = importance.to(torch.float32).expand(w.shape).contiguous()
    return g, affine.group_view(imp, scheme)[0]


def _nearest_per_element(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index (float32) of the entry of ``table [..., V]`` nearest each ``x [...]``;
    NaN entries are never chosen. Works through the leading dimension in chunks."""
    t = table.expand(*x.shape, table.shape[-1]) if table.dim() <= x.dim() else table
    t = torch.nan_to_num(t, nan=math.inf)
    if x.dim() == 0 or x.numel() * t.shape[-1] <= _CHUNK_ELEMS:
        return (x.unsqueeze(-1) - t).abs().argmin(-1).to(torch.float32)
    rows = max(1, _CHUNK_ELEMS // max(1, x[0].numel() * t.shape[-1]))
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], rows):
        out[i : i + rows] = (x[i : i + rows].unsqueeze(-1) - t[i : i + rows]).abs().argmin(-1)
    return out


# shorthand scale-dtype suffixes of the fp16-scaled grid formats
DTYPES = {None: "float16", "fp16": "float16", "bf16": "bfloat16"}


class ScaledGridFormat(GridFormat):
    """A grid of fixed code width with an fp16 (``:bf16``) scale per group, channel or
    tensor, spelt ``<prefix>[g<n>|gt][:fp16|:bf16]``: subclasses state ``prefix``,
    ``code_bits``, ``examples`` and the table."""

    prefix: ClassVar[str] = ""
    code_bits: ClassVar[int] = 4
    examples: ClassVar[str] = ""

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if scheme.bits != cls.code_bits:
            raise LmpressError(f"{cls.name} codes have {cls.code_bits} bits, not {scheme.bits}")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        m = re.match(rf"^{cls.prefix}(?P<g>g\d+|gt)?(?::(?P<dt>fp16|bf16))?$", spec)
        if not m:
            return None
        fields = parse_group(m["g"] or "")
        if fields is None:
            raise LmpressError(f"cannot read the group size of {spec!r}; e.g. {cls.prefix}g64")
        return Scheme(
            bits=cls.code_bits,
            format=cls.name,
            symmetric=True,
            scale_dtype=DTYPES[m["dt"]],
            **fields,
        )

    @classmethod
    def spellings(cls) -> str:
        return cls.examples

    def scheme_name(self) -> str:
        return f"{self.prefix}{self._group_suffix()}{self._dtype_suffix()}"


def parse_group(spec: str, default: str | None = None) -> dict[str, object] | None:
    """Granularity fields of a group suffix: ``g<n>`` groups, ``gt`` per tensor, ``""``
    per channel (or ``default`` when given, e.g. MX's fixed 32); ``None`` if malformed."""
    if spec == "":
        spec = default or ""
    if spec == "":
        return {"granularity": "channel", "group_size": 0}
    if spec == "gt":
        return {"granularity": "tensor", "group_size": 0}
    if spec.startswith("g") and spec[1:].isdigit() and int(spec[1:]) > 0:
        return {"granularity": "group", "group_size": int(spec[1:])}
    return None


class KeyedTables:
    """Several fixed tables, one chosen per weight by an integer-valued key tensor (the
    group's type for ``mix``, the row's power for ``nupes``): encoding and decoding
    loop over the keys present, each a shared-table operation."""

    def __init__(self, tables: dict[float, torch.Tensor]) -> None:
        self.tables = tables
        self.nearest = {k: NearestTable(t) for k, t in tables.items()}

    def encode(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for k in torch.unique(keys).tolist():
            sel = keys == k
            out = torch.where(sel, self.nearest[k].encode(x), out)
        return out

    def decode(self, codes: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(codes.shape, dtype=torch.float32, device=codes.device)
        for k in torch.unique(keys).tolist():
            out = torch.where(keys == k, self.nearest[k].decode(codes), out)
        return out
