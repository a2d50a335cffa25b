"""The packed weight: one matrix as stored, a set of named components.

The components are the scheme's format's own tensors (for ``int``: bit-packed codes
``qweight``, ``scales`` and, for asymmetric schemes, ``qzeros``; see
:meth:`lmpress.formats.integer.IntFormat.components`) and any optional components
(:mod:`lmpress.packing.components`: a sparsity mask, low-rank factors, ...). The names
are the safetensors suffixes under the module's prefix. Every component is stored,
moved, counted in the bits and decoded; code that cannot handle one refuses the weight.
"""

from dataclasses import dataclass

import torch

from lmpress.errors import LmpressError
from lmpress.formats.base import Params
from lmpress.formats.scheme import Scheme
from lmpress.packing.components import OPTIONAL_COMPONENTS, Component, optional_component_of

# 3: optional components (mask, low-rank factors, ...) or a format other than int;
# 2: float zero points; 1: integer zero points only. A checkpoint is written with the
# lowest version that describes it, so that older readers load what they can decode.
PACKED_FORMAT_VERSION = 3


def format_version(weights: "list[PackedWeight]") -> int:
    """The lowest checkpoint format version that describes these packed weights."""
    if any(p.optional_components() or p.scheme.format != "int" for p in weights):
        return 3
    return 2 if any(p.scheme.float_zero for p in weights) else 1


@dataclass
class PackedWeight:
    """One quantized ``[out_features, in_features]`` matrix in stored form."""

    scheme: Scheme
    out_features: int
    in_features: int
    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        """Every tensor is known, and the format's and each component's are complete and
        of the declared shapes and dtypes: a weight that decodes wrongly never forms."""
        comps = self.format_components()
        unknown = [n for n in self.tensors if n not in comps and optional_component_of(n) is None]
        if unknown:
            raise LmpressError(
                f"packed weight of scheme {self.scheme.name} has unknown component(s) "
                f"{unknown}; known: {sorted(comps)} and the optional components of "
                "lmpress.packing.components"
            )
        for n, c in comps.items():
            t = self.tensors.get(n)
            if t is None:
                raise LmpressError(f"packed weight of scheme {self.scheme.name} lacks {n!r}")
            if tuple(t.shape) != c.shape or t.dtype != c.dtype:
                raise LmpressError(
                    f"{n} of a {self.out_features}x{self.in_features} {self.scheme.name} weight "
                    f"is {list(t.shape)} {t.dtype}, expected {list(c.shape)} {c.dtype}"
                )
        for name in self.optional_components():
            comp = OPTIONAL_COMPONENTS.get(name)
            missing = [t for t in comp.tensors if t not in self.tensors]
            problem = (
                f"lacks {missing}"
                if missing
                else comp.problem(self.component_tensors(name), self.out_features, self.in_features)
            )
            if problem:
                raise LmpressError(f"packed weight component {name!r}: {problem}")

    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        params: Params,
        scheme: Scheme,
        extra: dict[str, torch.Tensor] | None = None,
    ) -> "PackedWeight":
        """Pack codes ``[out, in]`` and per-group ``params`` (``{name: [P, G]}``), plus
        optional component tensors ``extra``."""
        out_f, in_f = codes.shape
        tensors = scheme.fmt.pack(codes, params)
        tensors.update(extra or {})
        return cls(scheme, out_f, in_f, tensors)

    # -- the format's view -----------------------------------------------------------
    def format_components(self) -> dict[str, Component]:
        return self.scheme.fmt.components(self.out_features, self.in_features)

    def codes(self) -> torch.Tensor:
        """Unpacked codes, uint8 ``[out, in]``."""
        return self.scheme.fmt.unpack_codes(self.tensors, self.in_features)

    def params(self) -> Params:
        """Per-group parameters ``{name: [P, G]}`` float32, as stored."""
        return self.scheme.fmt.unpack_params(self.tensors)

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    @property
    def qweight(self) -> torch.Tensor:
        return self.tensors["qweight"]

    @property
    def scales(self) -> torch.Tensor:
        return self.tensors["scales"]

    @property
    def qzeros(self) -> torch.Tensor | None:
        return self.tensors.get("qzeros")

    def zeros(self) -> torch.Tensor:
        """Zero points as float32 ``[P, G]`` (formats with a ``zero`` parameter)."""
        return self.params()["zero"]

    # -- optional components -----------------------------------------------------------
    def optional_components(self) -> list[str]:
        """Names of the optional components this weight holds, in decoding order."""
        held = {c.name for n in self.tensors if (c := optional_component_of(n)) is not None}
        return [n for n in OPTIONAL_COMPONENTS.names_in_order() if n in held]

    def component_tensors(self, name: str) -> dict[str, torch.Tensor]:
        return {t: self.tensors[t] for t in OPTIONAL_COMPONENTS.get(name).tensors}

    # -- decoding and accounting ----------------------------------------------------------
    def dequantize(self) -> torch.Tensor:
        """Float32 weight ``[out, in]`` exactly as the stored tensors define it."""
        fmt = self.scheme.fmt
        w = fmt.decode(self.codes(), fmt.expand(self.params(), self.in_features, self.out_features))
        for name in self.optional_components():
            w = OPTIONAL_COMPONENTS.get(name).apply(w, self.component_tensors(name))
        return w

    def stored_bits(self) -> int:
        """Every bit this weight occupies on disk (all components, padding included)."""
        return sum(t.numel() * t.element_size() * 8 for t in self.tensors.values())

    def expected(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of every tensor this weight holds (format's and optional)."""
        shapes = {n: (c.shape, c.dtype) for n, c in self.format_components().items()}
        for n, t in self.tensors.items():
            if n not in shapes:
                shapes[n] = (tuple(t.shape), t.dtype)
        return shapes

    @staticmethod
    def expected_shapes(
        scheme: Scheme, out_f: int, in_f: int
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of each tensor the format stores for a matrix of this size."""
        return {n: (c.shape, c.dtype) for n, c in scheme.fmt.components(out_f, in_f).items()}


def concat_rows(parts: list[PackedWeight]) -> PackedWeight:
    """Several packed weights of one scheme (not per-tensor) stacked along their rows.

    The result decodes to ``torch.cat([p.dequantize() for p in parts])``: codes and
    per-row parameters move with their rows; the format re-packs what it stores as one
    stream; each optional component stacks its tensors or refuses.
    """
    s = parts[0].scheme
    if any(p.scheme != s or p.in_features != parts[0].in_features for p in parts):
        raise ValueError("concat_rows needs one scheme and one input width")
    if s.granularity == "tensor":
        raise ValueError("per-tensor weights have one scale each; they cannot share rows")
    held = [p.optional_components() for p in parts]
    if any(h != held[0] for h in held):
        raise LmpressError(
            f"cannot stack weights with different components {held}; keep them apart"
        )
    comps = parts[0].format_components()
    codes = [n for n, c in comps.items() if c.role == "codes"]
    tensors = {n: torch.cat([p.tensors[n] for p in parts]) for n in codes}
    params = [{n: p.tensors[n] for n in comps if n not in codes and n in p.tensors} for p in parts]
    tensors.update(s.fmt.concat_params(params))
    for name in held[0]:
        tensors.update(
            OPTIONAL_COMPONENTS.get(name).concat([p.component_tensors(name) for p in parts])
        )
    return PackedWeight(s, sum(p.out_features for p in parts), parts[0].in_features, tensors)
