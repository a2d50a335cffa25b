"""Honest size accounting: every stored bit, over a stated set of tensors."""

from pathlib import Path

from torch import nn

from lmpress.nn.qlinear import QLinear


def model_size_stats(model: nn.Module, path: str | Path | None = None) -> dict:
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
            for t in m.packed().tensors().values():
                qlinear_tensors.add(t.data_ptr())
    # The state dict holds exactly what a checkpoint stores (no non-persistent buffers).
    for t in model.state_dict().values():
        ptr = t.data_ptr()
        if ptr in seen or ptr in qlinear_tensors or not t.is_floating_point():
            continue
        seen.add(ptr)
        float_bits += t.numel() * t.element_size() * 8
        float_params += t.numel()
    stats = {
        "quantized_modules": sum(isinstance(m, QLinear) for m in model.modules()),
        "quantized_weights": q_weights,
        "bits_per_weight": q_bits / q_weights if q_weights else None,
        "bits_per_weight_model": (q_bits + float_bits) / (q_weights + float_params),
        "stored_bytes_estimate": (q_bits + float_bits) // 8,
    }
    if path is not None and Path(path).is_dir():
        stats["size_bytes"] = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        weights = Path(path) / "model.safetensors"
        if weights.is_file():
            stats["weights_file_bytes"] = weights.stat().st_size
    return stats
