"""End-loss guidance for layer-wise quantization (GuidedQuant; Kim et al., ICML 2025).

Layer-wise methods such as GPTQ minimise ``||(W - Q) X||^2``: every output channel
of every token counts alike, although the model's loss is far more sensitive to some
of them. GuidedQuant weights the error of output ``z[t, j]`` by the squared gradient
of the end loss with respect to it (a diagonal Fisher approximation in output
space), and shares one weighting per group of output channels so that each group of
rows of ``W`` keeps a single Hessian::

    H_k = sum_t s[t, k] x_t x_t^T,    s[t, k] = mean over j in group k of (dL/dz[t, j])^2

This module computes ``s`` on the float model by one forward and backward pass over
the calibration set. The pipeline then forms ``H_k`` from the inputs it propagates
through the already-quantized blocks, so that guidance and GPTQ's error propagation
combine (the paper forms ``H_k`` from the float model's inputs).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def output_row_groups(n_rows: int, groups: int) -> list[slice]:
    """The ``groups`` contiguous row ranges of a weight with ``n_rows`` output channels
    (``torch.tensor_split``'s sizes: the first ``n_rows % groups`` ranges one longer)."""
    bounds = [0]
    for k in range(groups):
        bounds.append(bounds[-1] + n_rows // groups + (1 if k < n_rows % groups else 0))
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def output_saliency(
    model: nn.Module,
    groups: dict[str, int],
    ids: torch.Tensor,
    batch_size: int = 1,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-token, per-row-group squared end-loss gradients of the outputs of linears.

    ``groups`` maps full module names of ``nn.Linear``-like modules to their number
    of output row groups ``g``; ``ids`` is int64 ``[n_samples, seq_len]``. Returns,
    per name, float32 ``[n_samples * seq_len, g]`` in the row-major token order of
    ``ids``. The loss is the summed next-token cross-entropy, so a sample's last
    token (which predicts nothing in the sample) gets zero weight. The model's
    parameters are left as they were (no gradients are accumulated on them). Memory is
    that of one backward pass through the whole model per batch of ``batch_size``
    samples (the default of one keeps it near the float model's own size; see
    BENCHMARKS.md for what a batch of four cost).
    """
    sal: dict[str, list[torch.Tensor]] = {n: [] for n in groups}

    def saliency_hook(name: str, g: int):
        def record(grad: torch.Tensor) -> None:
            go = grad.detach().to(torch.float32)
            go = go.reshape(-1, go.shape[-1]).square()
            parts = output_row_groups(go.shape[1], g)
            sal[name].append(torch.stack([go[:, p].mean(1) for p in parts], 1))

        def hook(_m, _args, out):  # noqa: ANN001, ANN202
            # a tensor hook on the output: cheaper than a module backward hook, which
            # wraps every input and output of the module in autograd functions
            out.register_hook(record)

        return hook

    handles = [
        model.get_submodule(n).register_forward_hook(saliency_hook(n, g)) for n, g in groups.items()
    ]
    try:
        end_loss_backward(model, ids, batch_size, "end-loss guidance", progress)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in sal.items()}


def end_loss_backward(
    model: nn.Module,
    ids: torch.Tensor,
    batch_size: int,
    desc: str,
    progress: bool = True,
    before_batch: Callable[[torch.Tensor], None] | None = None,
) -> None:
    """One backward pass of the summed next-token cross-entropy per batch of
    ``batch_size`` samples of int64 ``[n_samples, seq_len]`` ``ids``, for the tensor
    hooks a caller put on module outputs: the parameters are frozen for it (nothing
    accumulates on them; their ``requires_grad`` is restored) and the embeddings' output
    requires grad instead, so that every later activation carries a gradient.
    ``before_batch`` is called with each batch before its forward pass."""

    def embeddings_need_grad(_m, _args, out):  # noqa: ANN001, ANN202
        return out.requires_grad_(True)

    params = list(model.parameters())
    was = [p.requires_grad for p in params]
    handle = model.get_input_embeddings().register_forward_hook(embeddings_need_grad)
    try:
        for p in params:
            p.requires_grad_(False)
        bar = tqdm(
            range(0, ids.shape[0], batch_size), desc=desc, unit="batch", disable=not progress
        )
        for i in bar:
            x = ids[i : i + batch_size]
            if before_batch is not None:
                before_batch(x)
            with torch.enable_grad():
                logits = model(x, use_cache=False).logits
                loss = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]).to(torch.float32),
                    x[:, 1:].reshape(-1),
                    reduction="sum",
                )
                loss.backward()
            del logits, loss
    finally:
        handle.remove()
        for p, r in zip(params, was, strict=True):
            p.requires_grad_(r)
