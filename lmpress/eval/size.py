"""Honest size accounting: every stored bit, over a stated set of tensors."""

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lmpress.eval.result import Record
from lmpress.nn.qlinear import QLinear


@dataclass(frozen=True, kw_only=True)
class SizeStats(Record):
    """What a model stores, counted over stated sets of tensors (see :func:`model_size_stats`).

    ``bits_per_weight`` is ``None`` for a model without quantized modules. The file
    sizes are measured only for a model directory: ``size_bytes`` every file in it,
    ``weights_file_bytes`` its ``model.safetensors``.
    """

    quantized_modules: int
    quantized_weights: int
    bits_per_weight: float | None
    bits_per_weight_model: float
    stored_bytes_estimate: int
    size_bytes: int | None = None
    weights_file_bytes: int | None = None


def model_size_stats(model: nn.Module, path: str | Path | None = None) -> SizeStats:
    """Bits per weight over the quantized modules and over the whole model.

    ``bits_per_weight``: stored bits of every ``QLinear`` (codes, scales, zeros,
    padding; biases excluded, they are not weights of the matrix) divided by its
    ``out * in`` weights. ``bits_per_weight_model``: stored bits of all tensors
    (float ones at their dtype, tied tensors once) over all parameters.
    """
    q_bits = q_weights = 0
    float_bits = float_params = 0
    seen: set[int] = set()
    qlinear_tensors: set[int] = set()
    for m in model.modules():
        if isinstance(m, QLinear):
            q_bits += m.packed().stored_bits()
            q_weights += m.in_features * m.out_features
            for t in m.packed().tensors.values():
                qlinear_tensors.add(t.data_ptr())
    # The state dict holds exactly what a checkpoint stores (no non-persistent buffers).
    for t in model.state_dict().values():
        ptr = t.data_ptr()
        if ptr in seen or ptr in qlinear_tensors or not t.is_floating_point():
            continue
        seen.add(ptr)
        float_bits += t.numel() * t.element_size() * 8
        float_params += t.numel()
    size_bytes, weights_file_bytes = _file_sizes(path)
    return SizeStats(
        quantized_modules=sum(isinstance(m, QLinear) for m in model.modules()),
        quantized_weights=q_weights,
        bits_per_weight=q_bits / q_weights if q_weights else None,
        bits_per_weight_model=(q_bits + float_bits) / (q_weights + float_params),
        stored_bytes_estimate=(q_bits + float_bits) // 8,
        size_bytes=size_bytes,
        weights_file_bytes=weights_file_bytes,
    )


def _file_sizes(path: str | Path | None) -> tuple[int | None, int | None]:
    """Bytes of every file of a model directory and of its ``model.safetensors`` (``None``
    where there is no directory or no such file)."""
    if path is None or not Path(path).is_dir():
        return None, None
    total = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    weights = Path(path) / "model.safetensors"
    return total, weights.stat().st_size if weights.is_file() else None
