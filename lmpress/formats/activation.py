"""Activation schemes: how a linear's input is quantized at run time.

A weight scheme may carry an activation scheme, spelled as a suffix: ``w8a8`` (int8
weights, int8 activations), ``w4g128a8``, ``fp8a8`` (FP8 weights and activations),
``w4a4``, ``nvfp4a4``, ``mxfp4a4``. The suffix is ``a<bits>[s][:<format>]``:

- ``a8``: one scale per token computed at run time (dynamic), symmetric;
- ``a8s``: one scale per tensor from calibration statistics (static);
- ``:<format>`` names the activation format where it differs from the weight
  format's natural partner (integer weights take integer activations, FP8 weights
  FP8 E4M3 ones, ``nvfp4``/``mx*`` weights the same block format), e.g. ``w4a8:fp8``.

What a runtime computes is simulated exactly: the input is quantized to the grid
(``q = clamp(round(x / s))``), the product of the quantized input and the
dequantized weight is taken in float32 (equal to the integer or FP8 product times
the two scales, up to float32 accumulation), see :func:`quantize_activation`.
"""

import re
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import torch

from lmpress.errors import LmpressError

# activation formats and the bits each accepts
ACT_FORMATS: dict[str, tuple[int, ...]] = {
    "int": (2, 3, 4, 5, 6, 7, 8),
    "fp8": (8,),
    "mxfp4": (4,),
    "mxfp6": (6,),
    "mxfp8": (8,),
    "nvfp4": (4,),
}
FP8_MAX = 448.0  # largest finite E4M3 (fn) value
# QuaRot's clipping of 4-bit per-token activation ranges (Ashkboos et al. 2024, sec. 5);
# 8-bit and wider grids keep the full range
INT4_CLIP = 0.9

_SUFFIX = re.compile(r"^(?P<w>.+?)a(?P<bits>\d+)(?P<static>s)?(?::(?P<fmt>[a-z0-9]+))?$")


@dataclass(frozen=True)
class ActScheme:
    """How the input ``x [..., in_features]`` of one linear is quantized.

    ``dynamic``: symmetric scales per token (row) computed from each token's largest
    magnitude at run time; otherwise one scale per tensor, calibrated (the module's
    ``input_scale`` buffer). ``clip`` scales the range down (``s = clip * amax /
    qmax``). Block formats (``mxfp*``, ``nvfp4``) keep their own per-block scales.
    """

    format: str = "int"
    bits: int = 8
    dynamic: bool = True
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.format not in ACT_FORMATS:
            raise LmpressError(
                f"activation format {self.format!r} unknown; known: {', '.join(ACT_FORMATS)}"
            )
        if self.bits not in ACT_FORMATS[self.format]:
            raise LmpressError(
                f"{self.format} activations have {ACT_FORMATS[self.format]} bits, not {self.bits}"
            )
        if not self.dynamic and self.format not in ("int", "fp8"):
            raise LmpressError(
                f"{self.format} activations carry their own block scales; drop the 's' "
                "(static scales apply to int and fp8 activations)"
            )
        if not 0.0 < self.clip <= 1.0:
            raise LmpressError(f"activation clip must lie in (0, 1], got {self.clip}")

    @property
    def blocked(self) -> bool:
        """Whether the format has scales of its own (``mx*``, ``nvfp4``)."""
        return self.format not in ("int", "fp8")

    def suffix(self, weight_format: str) -> str:
        """The shorthand suffix after a weight scheme of format ``weight_format``."""
        s = f"a{self.bits}" + ("" if self.dynamic else "s")
        if self.format != default_act_format(weight_format, self.bits):
            s += f":{self.format}"
        return s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: "dict[str, Any] | ActScheme") -> "ActScheme":
        if isinstance(d, ActScheme):
            return d
        if not isinstance(d, dict):
            raise LmpressError(f"an activation scheme is a mapping, got {d!r}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise LmpressError(
                f"unknown activation scheme key(s) {sorted(unknown)}; allowed: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(**d)


def default_act_format(weight_format: str, bits: int) -> str:
    """The activation format a suffix without ``:<format>`` means after a weight format."""
    if weight_format == "fp8" and bits == 8:
        return "fp8"
    if weight_format == "nvfp4" and bits == 4:
        return "nvfp4"
    if weight_format == "mx" and f"mxfp{bits}" in ACT_FORMATS:
        return f"mxfp{bits}"
    return "int"


def split_act_suffix(text: str) -> tuple[str, dict[str, Any]] | None:
    """``("w4g128", {"bits": 8, ...})`` for ``"w4g128a8"``; ``None`` without a suffix.

    The fields are those given in the spelling; the weight format decides the rest
    (see :func:`act_for`)."""
    m = _SUFFIX.match(text)
    if not m:
        return None
    fields: dict[str, Any] = {"bits": int(m["bits"]), "dynamic": not m["static"]}
    if m["fmt"]:
        fields["format"] = m["fmt"]
    return m["w"], fields


def act_for(weight_format: str, fields: dict[str, Any]) -> ActScheme:
    """The activation scheme of suffix ``fields`` after a weight of ``weight_format``."""
    fmt = fields.get("format") or default_act_format(weight_format, fields["bits"])
    clip = INT4_CLIP if fmt == "int" and fields["bits"] <= 4 else 1.0
    return ActScheme(fmt, fields["bits"], fields.get("dynamic", True), fields.get("clip", clip))


def _qmax(act: ActScheme) -> float:
    return float(FP8_MAX if act.format == "fp8" else 2 ** (act.bits - 1) - 1)


def activation_scale(x: torch.Tensor, act: ActScheme) -> torch.Tensor:
    """Per-token scales ``[..., 1]`` float32 of ``x [..., C]`` under a dynamic int or fp8
    scheme (a zero row gets scale 1, which quantizes it to zeros)."""
    amax = x.detach().abs().amax(-1, keepdim=True).to(torch.float32)
    s = amax * act.clip / _qmax(act)
    return torch.where(s > 0, s, torch.ones_like(s))


def static_scale(amax: float, act: ActScheme) -> float:
    """The per-tensor scale of a static scheme for calibration inputs of largest
    magnitude ``amax``."""
    s = amax * act.clip / _qmax(act)
    return s if s > 0 else 1.0


def quantize_activation(
    x: torch.Tensor, act: ActScheme, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``x [..., C]`` quantized to the activation grid and dequantized (``x``'s dtype).

    Integer grids are symmetric, ``q = clamp(round(x / s), -qmax - 1, qmax)`` with
    ``qmax = 2**(bits-1) - 1``; FP8 is E4M3 of ``x / s`` (saturated at 448). ``scale``
    is the static per-tensor scale (a tensor with one element), ignored by dynamic
    schemes. Block formats quantize each token as one row of the weight format of the
    same name.
    """
    if act.blocked:
        return _block_quantize(x, act)
    s = activation_scale(x, act) if act.dynamic else _checked_static(scale)
    y = x.to(torch.float32) / s
    if act.format == "fp8":
        q = y.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(torch.float32)
    else:
        qmax = _qmax(act)
        q = torch.round(y).clamp_(-qmax - 1, qmax)
    return (q * s).to(x.dtype)


def _checked_static(scale: torch.Tensor | None) -> torch.Tensor:
    if scale is None:
        raise LmpressError("a static activation scheme needs its calibrated input_scale")
    return scale.reshape(()).to(torch.float32)


@cache
def _block_format(name: str):
    """The weight format of spelling ``name`` (parsed once: this runs every forward)."""
    from lmpress.formats.scheme import parse_scheme

    return parse_scheme(name).fmt


def _block_quantize(x: torch.Tensor, act: ActScheme) -> torch.Tensor:
    fmt = _block_format(act.format)
    rows = x.reshape(-1, x.shape[-1]).to(torch.float32)
    return fmt.fake_quantize(rows, fmt.choose_params(rows)).reshape(x.shape).to(x.dtype)
