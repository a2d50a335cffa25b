"""Checks vLLM's CPU int8 W8A8 arithmetic against lmpress's simulation, layer by layer.

Runs in vLLM's own virtual environment (``scripts/install_vllm.sh``)::

    .venv-vllm/bin/python scripts/vllm_int8_probe.py

On a CPU without AMX, vLLM's symmetric dynamic int8 linear goes through oneDNN
(``onednn_scaled_int8_quant`` then ``onednn_scaled_mm``); this quantizes one random
input with outlier channels both ways (per-token scale ``amax / 127``, round to
nearest) and compares the codes, the scales and the products. Prints what differs.
"""

import torch
from vllm import _custom_ops as ops


def main() -> None:
    torch.manual_seed(0)
    m, k, n = 64, 576, 1536
    x = torch.randn(m, k) * torch.where(torch.rand(k) < 0.02, 20.0, 1.0)
    w = torch.randn(n, k)
    ws = w.abs().amax(1, keepdim=True) / 127
    wq = torch.round(w / ws).clamp(-127, 127).to(torch.int8)
    xs = x.abs().amax(1, keepdim=True) / 127
    xq = torch.round(x / xs).clamp(-128, 127)
    ref = (xq @ wq.float().t()) * xs * ws.t()

    q, s, _ = ops.onednn_scaled_int8_quant(x.contiguous(), None, None, True)
    print("scales: max relative difference", ((s.view(-1, 1) - xs).abs() / xs).max().item())
    print("codes: differing", int((q.float() != xq).sum()), "of", q.numel())
    handle = ops.create_onednn_scaled_mm(
        wq.t(), ws.view(-1).contiguous(), torch.float32, True, False
    )
    out = torch.empty(m, n)
    ops.onednn_scaled_mm(handle, q, out, s, None, None, None)
    print(
        "product: relative error against the exact integer product",
        ((out - ref).norm() / ref.norm()).item(),
    )
    print(
        "for scale: the int8 product's relative error against float",
        ((x @ w.t() - ref).norm() / ref.norm()).item(),
    )


if __name__ == "__main__":
    main()
