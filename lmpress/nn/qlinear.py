"""``QLinear``: a linear layer whose weight is a :class:`PackedWeight`."""

import torch
from torch import nn

from lmpress.errors import LmpressError
from lmpress.formats.activation import quantize_activation
from lmpress.formats.scheme import Scheme
from lmpress.kernels import KERNELS, select_kernel
from lmpress.packing.packed import PackedWeight


class QLinear(nn.Module):
    """Holds every component of a packed weight as a buffer; forward equals
    dequantize-then-``F.linear``.

    The buffers are the scheme's format's tensors plus any optional components
    (``components``: name -> (shape, dtype), e.g. a sparsity mask), so that
    ``state_dict`` and the checkpoint carry all of them. ``kernel`` names a backend of
    :mod:`lmpress.kernels` (``auto``: the fastest one that supports this weight, else
    the torch reference; ``kernel_reason`` says why a kernel was passed over). The
    kernel's state (for the reference, the dequantized weight) is prepared at the
    first forward and dropped when the buffers change; the packed buffers stay the
    source of truth and are what the checkpoint stores.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scheme: Scheme,
        bias: bool,
        kernel: str = "auto",
        cache_weight: bool = True,
        device: "torch.device | str | None" = None,
        components: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scheme = scheme
        self.kernel_name = kernel
        self.cache_weight = cache_weight
        self._weight_cache: torch.Tensor | None = None
        self._kernel_state: tuple[object, object] | None = None  # (kernel, its state)
        self.kernel_reason = ""
        expected = PackedWeight.expected_shapes(scheme, out_features, in_features)
        expected.update(components or {})
        self.component_names = tuple(expected)
        for name, (shape, dtype) in expected.items():
            self.register_buffer(name, torch.zeros(shape, dtype=dtype, device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, device=device))
        else:
            self.bias = None
        if scheme.act is not None and not scheme.act.dynamic:
            self.register_buffer("input_scale", torch.ones(1, device=device))
        else:
            self.input_scale = None
        self.input_rotation: nn.Module | None = None
        # set while calibration records the largest input magnitude (static schemes)
        self.observed_amax: float | None = None

    @classmethod
    def from_packed(cls, packed: PackedWeight, bias: torch.Tensor | None) -> "QLinear":
        m = cls(
            packed.in_features,
            packed.out_features,
            packed.scheme,
            bias is not None,
            components=packed.expected(),
        )
        for name, t in packed.tensors.items():
            setattr(m, name, t.clone())
        if bias is not None:
            m.bias = bias.detach().to(torch.float32).clone()
        return m

    def packed(self) -> PackedWeight:
        tensors = {n: self._buffers[n] for n in self.component_names}
        return PackedWeight(self.scheme, self.out_features, self.in_features, tensors)

    def dequantized_weight(self) -> torch.Tensor:
        if self._weight_cache is not None:
            return self._weight_cache
        w = self.packed().dequantize()
        if self.cache_weight:
            self._weight_cache = w
        return w

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001
        """Moves follow ``fn`` but packed tensors keep their dtypes (``.half()`` must not
        re-round stored scales); the dequantized cache is dropped."""
        before = {n: b for n, b in self._buffers.items() if b is not None and n != "bias"}
        self._weight_cache = None
        self._kernel_state = None
        super()._apply(fn, recurse)
        for n, old in before.items():
            new = self._buffers[n]
            if new is not None and new.dtype != old.dtype:
                self._buffers[n] = old.to(new.device)  # lossless: only the device moves
        return self

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self._weight_cache = None
        self._kernel_state = None
        return super()._load_from_state_dict(*args, **kwargs)

    def set_kernel(self, name: str) -> None:
        """Run through kernel ``name`` (``auto``, ``cpu``, ``torch``) from the next call."""
        if name != "auto":
            KERNELS.get(name)  # fails now on a bad name; whether it runs is decided at use
        self.kernel_name = name
        self._kernel_state = None

    def kernel(self) -> tuple[object, object]:
        """The kernel this module runs on its device, and the state prepared for it."""
        if self._kernel_state is None:
            packed = self.packed()
            k, self.kernel_reason = select_kernel(self.kernel_name, packed, packed.device)
            state = self.dequantized_weight() if k.name == "torch" else k.prepare(packed)
            self._kernel_state = (k, state)
        return self._kernel_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_rotation is not None:
            x = self.input_rotation(x)
        act = self.scheme.act
        if act is not None:
            if self.observed_amax is not None:
                self.observed_amax = max(self.observed_amax, float(x.detach().abs().max()))
            if act.dynamic or self.observed_amax is None:
                x = quantize_activation(x, act, self.input_scale)
        k, state = self.kernel()
        return k(x, state, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, scheme={self.scheme.name}"


def online_parts(model: nn.Module, activations: bool = True) -> list[str]:
    """Modules that do more at run time than a weight product: quantized inputs
    (``scheme.act``; left out with ``activations=False``, for a caller that checks them
    itself), a quantized kv cache or an online input rotation; runtimes that cannot
    express these must refuse the model."""
    from lmpress.nn.kv_cache import kv_scheme_of

    kv = kv_scheme_of(model)
    out = [f"the kv cache ({kv.name})"] if kv is not None else []
    for name, m in model.named_modules():
        if getattr(m, "input_rotation", None) is not None:
            out.append(f"{name} (online input rotation)")
        elif activations and isinstance(m, QLinear) and m.scheme.act is not None:
            out.append(f"{name} (activations {m.scheme.act.suffix(m.scheme.format)})")
    return out


def refuse_online_parts(model: nn.Module, who: str, activations: bool = True) -> None:
    """Raise :class:`LmpressError` naming the first module ``who`` cannot run
    (``activations=False``: ``who`` checks quantized activations itself)."""
    parts = online_parts(model, activations)
    if parts:
        more = f" and {len(parts) - 1} more" if len(parts) > 1 else ""
        raise LmpressError(
            f"{who} does not run quantized activations, kv caches or online rotations yet: "
            f"{parts[0]}{more}; use a weight-only scheme, or evaluate through transformers"
        )
