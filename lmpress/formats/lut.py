"""Learned grids: 16 (``lut4``) or 8 (``lut3``) values per output channel, fitted to the
row's weights by weighted k-means, the weights of the fit being each input channel's
importance (the Hessian diagonal, ``E[x^2]``) when calibration data is there
(SqueezeLLM, Kim et al. 2024, "Dense-and-Sparse Quantization"). With a group size
(``lut4g128``) each group of the row is first divided by its fp16 absmax scale and
the row's grid is fitted to the scaled weights ("any4", Elhoushi et al. 2025: a
per-row table behind group-wise scaling). A code is an index into its row's grid;
the grid is stored in fp16.

Spellings: ``lut4``, ``lut3`` (one grid per row, no scales), ``lut4g128``, ``lut3g64``
(a grid per row and an fp16 scale per group).
"""

import re
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import Params, register_format
from lmpress.formats.grid import GridFormat, parse_group

if TYPE_CHECKING:
    from lmpress.formats.scheme import Scheme
    from lmpress.packing.components import Component

_SHORT = re.compile(r"^lut(?P<bits>[1-4])(?P<g>g\d+)?$")
# Lloyd iterations of the k-means fit
ITERS = 25


@register_format("lut")
class LutFormat(GridFormat):
    """Codes index a learned fp16 grid of ``2**bits`` values per row, times an fp16
    scale per group for grouped schemes."""

    granularities: ClassVar[tuple[str, ...]] = ("channel", "group")

    @property
    def size(self) -> int:
        return 1 << self.scheme.bits

    @property
    def grouped(self) -> bool:
        return self.scheme.granularity == "group"

    @property
    def grid_names(self) -> tuple[str, ...]:
        return tuple(f"v{i}" for i in range(self.size))

    @property
    def param_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return (("scale",) if self.grouped else ()) + self.grid_names

    @classmethod
    def check_scheme(cls, scheme: "Scheme") -> None:
        if not 1 <= scheme.bits <= 4:
            raise LmpressError(f"lut grids have 2 to 16 values (1-4 bits), not {scheme.bits} bits")
        super().check_scheme(scheme)

    @classmethod
    def parse(cls, spec: str) -> "Scheme | None":
        from lmpress.formats.scheme import Scheme

        m = _SHORT.match(spec)
        if not m:
            return None
        fields = parse_group(m["g"] or "")
        assert fields is not None
        return Scheme(bits=int(m["bits"]), format="lut", symmetric=True, **fields)

    @classmethod
    def spellings(cls) -> str:
        return "lut4, lut3, lut4g128"

    def scheme_name(self) -> str:
        return f"lut{self.scheme.bits}{self._group_suffix()}"

    def table(self, params: Params) -> torch.Tensor:
        return torch.stack([params[n] for n in self.grid_names], dim=-1)

    def table_max(self) -> float:
        return 1.0

    # -- fitting -------------------------------------------------------------------------
    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        """Group scales by absmax (grouped schemes), then a weighted k-means of each row's
        scaled weights; a scaled weight's error counts ``scale^2`` times (the search flag
        changes nothing: the fit always minimises the weighted squared error)."""
        g, imp = self.group_view(w, importance)
        p, ng, n = g.shape
        imp = imp.expand_as(g)
        out: Params = {}
        if self.grouped:
            scale = self.storable_scale(g.abs().amax(-1))
            out["scale"] = scale
            g = g / scale.unsqueeze(-1)
            imp = imp * scale.unsqueeze(-1).square()
        grid = weighted_kmeans(g.reshape(p, ng * n), imp.reshape(p, ng * n), self.size)
        grid = grid.to(torch.float16).to(torch.float32)
        for i, name in enumerate(self.grid_names):
            out[name] = grid[:, i : i + 1].expand(p, ng).contiguous()
        return out

    def storable_params(self, params: Params) -> Params:
        out = {k: params[k].to(torch.float16).to(torch.float32) for k in self.grid_names}
        if self.grouped:
            out["scale"] = self.storable_scale(params["scale"])
        return out

    def refit_params(
        self, w: torch.Tensor, codes: torch.Tensor, params: Params, hessian: torch.Tensor
    ) -> Params:
        """The grid values of least layer-output error for fixed codes and scales: per
        row, the least-squares solution of ``min_g (w - A g)^T H (w - A g)`` with
        ``A [in, V]`` the one-hot of each weight's code times its group's scale (``w``,
        ``codes [out, in]`` float32, ``hessian [in, in]`` float32). GPTQ's codes were
        chosen against the start grid; moving the grid to them lowers the objective GPTQ
        minimises (kept only when it does, after the fp16 rounding). Codes no weight
        uses keep their values."""
        rows, cols = w.shape
        v = self.size
        scale = (
            self.expand({"scale": params["scale"]}, cols)["scale"]
            if self.grouped
            else torch.ones(rows, cols)
        )
        a = torch.zeros(rows, cols, v)
        a.scatter_(2, codes.long().unsqueeze(-1), scale.unsqueeze(-1))
        h = hessian.to(torch.float32)
        ha = torch.einsum("kl,rlu->rku", h, a)  # H A, [rows, in, V]
        m = torch.einsum("rku,rkv->ruv", a, ha)  # A^T H A
        rhs = torch.einsum("rku,rk->ru", ha, w)  # A^T H w
        old = self.table({n: params[n][:, :1] for n in self.grid_names}).reshape(rows, v)
        ridge = 1e-6 * m.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True).clamp_min(1e-12)
        m = m + torch.diag_embed(ridge.expand(rows, v))
        new = torch.linalg.solve(m, rhs + ridge * old).to(torch.float16).to(torch.float32)
        fitted = dict(params)
        g = params[self.grid_names[0]].shape[1]
        for i, name in enumerate(self.grid_names):
            fitted[name] = new[:, i : i + 1].expand(rows, g).contiguous()
        better = _objective(w, codes, fitted, h, self) < _objective(w, codes, params, h, self)
        return fitted if better else params

    # -- storage -------------------------------------------------------------------------
    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        from lmpress.packing.components import Component

        comps = super().components(out_features, in_features)
        if not self.grouped:
            del comps["scales"]
        comps["grid"] = Component((out_features, self.size), torch.float16, "params")
        return comps

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        t = self.table({n: params[n][:, :1] for n in self.grid_names})  # [P, 1, V]
        out = {
            "qweight": pack_codes(codes.to(torch.int64), self.scheme.bits),
            "grid": t.reshape(t.shape[0], self.size).to(torch.float16).contiguous(),
        }
        if self.grouped:
            out["scales"] = self.pack_scale(params["scale"])
        return out

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        grid = tensors["grid"].to(torch.float32)
        out: Params = {}
        g = 1
        if self.grouped:
            out["scale"] = self.unpack_scale(tensors["scales"])
            g = out["scale"].shape[1]
        for i, name in enumerate(self.grid_names):
            out[name] = grid[:, i : i + 1].expand(grid.shape[0], g).contiguous()
        return out

    def kernel_tables(
        self, tensors: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        tables = tensors["grid"].to(torch.float32)
        p = tables.shape[0]
        scale = self.unpack_scale(tensors["scales"]) if self.grouped else torch.ones(p, 1)
        index = torch.arange(p, dtype=torch.int32).unsqueeze(1).expand_as(scale).contiguous()
        return tables, index, scale


def _objective(
    w: torch.Tensor, codes: torch.Tensor, params: Params, h: torch.Tensor, fmt: LutFormat
) -> float:
    """``tr(dW H dW^T)`` of the weight the codes and grid decode to."""
    cols = fmt.expand(params, w.shape[1], w.shape[0])
    d = fmt.decode(codes, cols) - w
    return float(((d @ h) * d).sum())


def weighted_kmeans(x: torch.Tensor, w: torch.Tensor, k: int, iters: int = ITERS) -> torch.Tensor:
    """Sorted centroids ``[R, k]`` float32 of ``k``-means on each row of ``x [R, N]``
    (float32) with non-negative weights ``w [R, N]`` (0 drops an element).

    Lloyd's iterations never raise the weighted squared error, but stop in the local
    optimum of their start, which for weights already on a coarse grid can be worse than
    a fixed grid; so they run from two starts, the weighted quantiles and a fixed grid
    scaled to the row's range (NF4's for 16 values, uniform otherwise), and each row
    keeps the better result: never worse than that fixed grid.
    """
    xs, order = torch.sort(x, dim=1)
    ws = torch.gather(w, 1, order) + 1e-12
    cdf = torch.cumsum(ws, 1)
    cdf = cdf / cdf[:, -1:]
    q = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    idx = torch.searchsorted(cdf, q.expand(x.shape[0], k).contiguous()).clamp_max(x.shape[1] - 1)
    amax = xs.abs().amax(1, keepdim=True)
    if k == 16:
        from lmpress.formats.nf4 import NF4_LEVELS

        fixed = torch.tensor(NF4_LEVELS, dtype=torch.float32)
    else:
        fixed = torch.linspace(-1, 1, k)
    best, best_err = None, None
    for start in (torch.gather(xs, 1, idx), fixed * amax):
        c, err = _lloyd(xs, ws, start, iters)
        if best is None:
            best, best_err = c, err
            continue
        better = (err < best_err).unsqueeze(1)
        best = torch.where(better, c, best)
        best_err = torch.where(better.squeeze(1), err, best_err)
    assert best is not None
    return best


def _lloyd(
    xs: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, iters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's iterations on sorted rows ``xs [R, N]`` with weights ``ws`` from centroids
    ``c [R, k]``: the sorted centroids and each row's weighted squared error ``[R]``."""
    c, _ = torch.sort(c, dim=1)
    for _ in range(iters):
        mids = (c[:, 1:] + c[:, :-1]) / 2
        a = torch.searchsorted(mids.contiguous(), xs)
        num = torch.zeros_like(c).scatter_add_(1, a, ws * xs)
        den = torch.zeros_like(c).scatter_add_(1, a, ws)
        new = torch.where(den > 1e-10, num / den.clamp_min(1e-30), c)
        new, _ = torch.sort(new, dim=1)
        if torch.equal(new, c):
            break
        c = new
    mids = (c[:, 1:] + c[:, :-1]) / 2
    a = torch.searchsorted(mids.contiguous(), xs)
    err = (ws * (xs - torch.gather(c, 1, a)).square()).sum(1)
    return c, err
