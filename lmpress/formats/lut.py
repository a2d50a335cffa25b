"""Learned grids: 16 (``lut4``) or 8 (``lut3``) values per output channel (or per group),
fitted to the weights by weighted k-means, the weights of the fit being each input
channel's importance (the Hessian diagonal, ``E[x^2]``) when calibration data is there
(SqueezeLLM, Kim et al. 2024, "Dense-and-Sparse Quantization"; "any4", Elhoushi et al.
2025). A code is an index into its row's grid; the grid is stored in fp16 and there is
no separate scale.

Spellings: ``lut4`` (per channel), ``lut3``, ``lut4g128`` (one grid per group of 128).
"""

import re
from typing import TYPE_CHECKING, ClassVar

import torch

from lmpress.errors import LmpressError
from lmpress.formats import affine
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
    """Codes index a learned fp16 grid of ``2**bits`` values per row (or group)."""

    granularities: ClassVar[tuple[str, ...]] = ("channel", "group")

    @property
    def size(self) -> int:
        return 1 << self.scheme.bits

    @property
    def param_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"v{i}" for i in range(self.size))

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
        return torch.stack([params[n] for n in self.param_names], dim=-1)

    def table_max(self) -> float:
        return 1.0

    # -- fitting -------------------------------------------------------------------------
    def choose_params(
        self, w: torch.Tensor, importance: torch.Tensor | None = None, search: bool = False
    ) -> Params:
        """Weighted k-means of each group's weights (the search flag changes nothing: the
        fit always minimises the weighted squared error)."""
        g, imp = self.group_view(w, importance)
        p, ng, n = g.shape
        imp = imp.expand_as(g).reshape(p * ng, n)
        grid = weighted_kmeans(g.reshape(p * ng, n), imp, self.size)
        grid = grid.to(torch.float16).to(torch.float32).reshape(p, ng, self.size)
        return {name: grid[..., i].contiguous() for i, name in enumerate(self.param_names)}

    def storable_params(self, params: Params) -> Params:
        return {k: v.to(torch.float16).to(torch.float32) for k, v in params.items()}

    def refit_params(
        self, w: torch.Tensor, codes: torch.Tensor, params: Params, hessian: torch.Tensor
    ) -> Params:
        """The grid values of least layer-output error for fixed codes: per row, the
        least-squares solution of ``min_g (w - A g)^T H (w - A g)`` with ``A [in, G*V]``
        the one-hot of each weight's group and code (``w``, ``codes [out, in]`` float32,
        ``hessian [in, in]`` float32). GPTQ's codes were chosen against the start grid;
        moving the grid to them can only lower the objective GPTQ minimises (before the
        fp16 rounding of the values). Codes no weight uses keep their values."""
        rows, cols = w.shape
        v = self.size
        groups = torch.arange(cols) // self.scheme.group_len(cols)
        units = int(groups.max()) + 1
        slot = (groups.unsqueeze(0) * v + codes.long()).clamp_max(units * v - 1)
        onehot = torch.zeros(rows, cols, units * v)
        onehot.scatter_(2, slot.unsqueeze(-1), 1.0)
        h = hessian.to(torch.float32)
        ho = torch.einsum("kl,rlu->rku", h, onehot)  # H A, [rows, in, U]
        m = torch.einsum("rku,rkv->ruv", onehot, ho)  # A^T H A
        rhs = torch.einsum("rku,rk->ru", ho, w)  # A^T H w
        old = self.table(params).reshape(rows, units * v)
        ridge = 1e-6 * m.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True).clamp_min(1e-12)
        m = m + torch.diag_embed(ridge.expand(rows, units * v))
        new = torch.linalg.solve(m, rhs + ridge * old)
        new = new.reshape(rows, units, v).to(torch.float16).to(torch.float32)
        fitted = {name: new[..., i].contiguous() for i, name in enumerate(self.param_names)}
        return (
            fitted
            if _objective(w, codes, fitted, h, self) < _objective(w, codes, params, h, self)
            else params
        )

    # -- storage -------------------------------------------------------------------------
    def components(self, out_features: int, in_features: int) -> "dict[str, Component]":
        from lmpress.packing.bits import packed_row_bytes
        from lmpress.packing.components import Component

        g = affine.num_groups(in_features, self.scheme)
        return {
            "qweight": Component(
                (out_features, packed_row_bytes(in_features, self.scheme.bits)),
                torch.uint8,
                "codes",
            ),
            "grid": Component((out_features, g * self.size), torch.float16, "params"),
        }

    def pack(self, codes: torch.Tensor, params: Params) -> dict[str, torch.Tensor]:
        from lmpress.packing.bits import pack_codes

        t = self.table(params)  # [P, G, V]
        return {
            "qweight": pack_codes(codes.to(torch.int64), self.scheme.bits),
            "grid": t.reshape(t.shape[0], -1).to(torch.float16).contiguous(),
        }

    def unpack_params(self, tensors: dict[str, torch.Tensor]) -> Params:
        grid = tensors["grid"].to(torch.float32)
        t = grid.reshape(grid.shape[0], -1, self.size)
        return {name: t[..., i].contiguous() for i, name in enumerate(self.param_names)}

    def kernel_tables(
        self, tensors: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        grid = tensors["grid"].to(torch.float32)
        p = grid.shape[0]
        tables = grid.reshape(-1, self.size)
        g = tables.shape[0] // p
        index = torch.arange(p * g, dtype=torch.int32).reshape(p, g)
        return tables, index, torch.ones(p, g)


def _objective(
    w: torch.Tensor, codes: torch.Tensor, params: Params, h: torch.Tensor, fmt: LutFormat
) -> float:
    """``tr(dW H dW^T)`` of the weight the codes and grid decode to."""
    cols = fmt.expand(params, w.shape[1], w.shape[0])
    d = fmt.decode(codes, cols) - w
    return float(((d @ h) * d).sum())


def weighted_kmeans(x: torch.Tensor, w: torch.Tensor, k: int, iters: int = ITERS) -> torch.Tensor:
    """Sorted centroids ``[R, k]`` float32 of ``k``-means on each row of ``x [R, N]``
    (float32) with non-negative weights ``w [R, N]`` (0 drops an element): Lloyd's
    iterations from the weighted quantiles; an empty cluster keeps its centroid."""
    xs, order = torch.sort(x, dim=1)
    ws = torch.gather(w, 1, order) + 1e-12
    cdf = torch.cumsum(ws, 1)
    cdf = cdf / cdf[:, -1:]
    q = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    idx = torch.searchsorted(cdf, q.expand(x.shape[0], k).contiguous()).clamp_max(x.shape[1] - 1)
    c = torch.gather(xs, 1, idx)
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
    return c
