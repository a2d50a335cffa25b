"""Perplexity by the GPTQ token protocol, and agreement with the base model.

Protocol: the text's rows joined by blank lines, tokenized once, cut into
non-overlapping windows of ``ctx`` tokens; every window scores its ``ctx - 1``
next-token predictions in float32. This matches ``shared/tools/reference_ppl.py``.
"""

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lmpress.data import read_rows_joined, resolve_text
from lmpress.errors import LmpressError
from lmpress.eval.base_cache import BaseLogitsCache


def eval_ids(tokenizer, text: str) -> torch.Tensor:
    """Token ids ``int64 [n_tokens]`` of a dataset name or text file, by the protocol."""
    path: Path = resolve_text(text, purpose="eval")
    return tokenizer(read_rows_joined(path), return_tensors="pt").input_ids[0]


def n_windows(ids: torch.Tensor, ctx: int, windows: int | None) -> int:
    if ctx < 2:
        raise LmpressError(f"--ctx must be at least 2, got {ctx}")
    n = ids.numel() // ctx
    if n == 0:
        raise LmpressError(f"the text has {ids.numel()} tokens, fewer than one window of {ctx}")
    return n if windows is None else min(n, windows)


def _window_logits(model: nn.Module, ids: torch.Tensor, ctx: int, i: int) -> torch.Tensor:
    x = ids[i * ctx : (i + 1) * ctx].unsqueeze(0)
    return model(x, use_cache=False).logits[0, :-1].to(torch.float32)


@torch.no_grad()
def fill_base_cache(
    base: nn.Module,
    ids: torch.Tensor,
    ctx: int,
    n: int,
    cache: BaseLogitsCache,
    progress: bool = True,
) -> None:
    """Compute and store the base model's logits for the windows the cache lacks."""
    todo = [i for i in range(n) if not cache.path(i).is_file()]
    for i in tqdm(todo, desc="base logits", unit="window", disable=not progress):
        cache.put(i, _window_logits(base, ids, ctx, i))


def _kl_and_top1(logits: torch.Tensor, base_logits: torch.Tensor, chunk: int = 512):
    """Per-position ``KL(base || model)`` and top-1 agreement; inputs float32 ``[T, V]``."""
    kls, agree = [], []
    for s in range(0, logits.shape[0], chunk):
        lq = F.log_softmax(logits[s : s + chunk], dim=-1)
        lb = F.log_softmax(base_logits[s : s + chunk].to(torch.float32), dim=-1)
        kls.append((lb.exp() * (lb - lq)).sum(-1))
        agree.append(lq.argmax(-1) == lb.argmax(-1))
    return torch.cat(kls), torch.cat(agree)


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    ctx: int = 2048,
    windows: int | None = 16,
    base_cache: BaseLogitsCache | None = None,
    progress: bool = True,
) -> dict:
    """Perplexity of ``model`` on ``ids [n_tokens]``; with ``base_cache``, KL and top-1 too."""
    n = n_windows(ids, ctx, windows)
    nll, count = 0.0, 0
    kls, agrees = [], []
    t0 = time.perf_counter()
    for i in tqdm(range(n), desc="perplexity", unit="window", disable=not progress):
        logits = _window_logits(model, ids, ctx, i)
        target = ids[i * ctx + 1 : (i + 1) * ctx]
        nll += F.cross_entropy(logits, target, reduction="sum").item()
        count += target.numel()
        if base_cache is not None:
            kl, agree = _kl_and_top1(logits, base_cache.get(i))
            kls.append(kl)
            agrees.append(agree)
    out = {
        "ppl": math.exp(nll / count),
        "nll_per_token": nll / count,
        "ctx": ctx,
        "windows": n,
        "tokens_scored": count,
        "eval_seconds": time.perf_counter() - t0,
    }
    if kls:
        kl = torch.cat(kls).to(torch.float64)
        agree = torch.cat(agrees).to(torch.float64)
        out.update(
            kl_mean=kl.mean().item(),
            kl_stderr=(kl.std() / math.sqrt(kl.numel())).item(),
            kl_median=kl.median().item(),
            kl_p99=torch.quantile(kl, 0.99).item(),
            top1_agreement=agree.mean().item(),
        )
    return out
