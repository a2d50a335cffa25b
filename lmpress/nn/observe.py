"""Static activation scales: the largest input magnitude each linear sees on calibration
data, turned into the per-tensor scale of its static activation scheme."""

import torch
from torch import nn
from tqdm import tqdm

from lmpress.formats.activation import static_scale
from lmpress.nn.qlinear import QLinear


def static_act_modules(model: nn.Module) -> list[tuple[str, QLinear]]:
    """The quantized linears whose activation scheme has a calibrated scale."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, QLinear) and m.scheme.act is not None and not m.scheme.act.dynamic
    ]


@torch.no_grad()
def calibrate_input_scales(
    model: nn.Module, ids: torch.Tensor, batch_size: int = 8, progress: bool = True
) -> dict[str, float]:
    """Set ``input_scale`` of every static-activation ``QLinear`` from one pass of ``ids``
    (int64 ``[n_samples, seq_len]``) through ``model``; returns the scales by module.

    During the pass the static inputs stay float (dynamic ones are quantized as at run
    time), so that each scale sees the inputs of the model it is calibrated in, not
    inputs already clipped by scales still being measured.
    """
    mods = static_act_modules(model)
    if not mods:
        return {}
    for _, m in mods:
        m.observed_amax = 0.0
    try:
        for batch in tqdm(
            ids.split(batch_size), desc="activation scales", unit="batch", disable=not progress
        ):
            model(batch.to(next(model.parameters(), torch.empty(0)).device))
    finally:
        amax = {n: m.observed_amax or 0.0 for n, m in mods}
        for _, m in mods:
            m.observed_amax = None
    out = {}
    for n, m in mods:
        out[n] = static_scale(amax[n], m.scheme.act)
        m.input_scale.fill_(out[n])
    return out
