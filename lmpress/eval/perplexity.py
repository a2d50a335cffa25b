"""Perplexity by the GPTQ token protocol, and agreement with the base model.

Protocol (``convention="gptq"``): the text's rows joined by blank lines,
tokenized once, cut into non-overlapping windows of ``ctx`` tokens; every window
scores its ``ctx - 1`` next-token predictions in float32. This matches
``shared/tools/reference_ppl.py``.

``convention="llamacpp"``: llama.cpp's ``llama-perplexity``: the file as it is,
tokenized once, windows of ``ctx`` (512 by default) tokens whose first token is
replaced by BOS when the tokenizer adds one, and only the second half of each
window scored (the first half is context), so its figures can be put beside
llama.cpp's.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lmpress.data import read_rows_joined, read_text_file, resolve_text
from lmpress.errors import LmpressError
from lmpress.eval.base_cache import BaseLogitsCache
from lmpress.eval.result import Record

CONVENTIONS = ("gptq", "llamacpp")


@dataclass(frozen=True, kw_only=True)
class AgreementStats(Record):
    """llama.cpp's KL-divergence report against the base model over ``positions``
    predictions: KL(base || model) with its standard error and percentiles, top-1
    agreement, and the change in the correct token's probability (model minus base)."""

    kl_mean: float
    kl_stderr: float
    kl_median: float
    kl_p99: float
    kl_p999: float
    kl_max: float
    top1_agreement: float
    top1_stderr: float
    delta_p_mean: float
    delta_p_stderr: float
    delta_p_rms: float
    positions: int


@dataclass(frozen=True, kw_only=True)
class PplRatio(Record):
    """``ln(PPL(model) / PPL(base))`` on the same positions, with its standard errors
    over positions and over windows (see :func:`ppl_ratio_stats`); ``nan`` where there
    is only one sample."""

    ln_ppl_ratio: float
    ln_ppl_ratio_stderr: float
    ln_ppl_ratio_stderr_windows: float


@dataclass(frozen=True, kw_only=True)
class PerplexityResult(Record):
    """Token perplexity over ``windows`` windows of ``ctx`` tokens, each scoring its
    predictions from ``first_scored`` on; ``agreement`` and ``ratio`` are set when the
    base model's logits were given.

    ``window_nll`` / ``window_tokens`` keep each window's NLL sum and count, so that
    two evaluations of the same windows can be paired later (:func:`paired_difference`).
    """

    ppl: float
    nll_per_token: float
    ctx: int
    windows: int
    first_scored: int
    tokens_scored: int
    window_nll: list[float]
    window_tokens: list[int]
    eval_seconds: float
    agreement: AgreementStats | None = None
    ratio: PplRatio | None = None


def eval_ids(tokenizer, text: str, convention: str = "gptq", ctx: int = 2048) -> torch.Tensor:
    """Token ids ``int64 [n_tokens]`` of a dataset name or text file, by the convention.

    For ``llamacpp`` every ``ctx``-th token is already replaced by BOS (when the
    tokenizer adds one), so windows cut from these ids are llama.cpp's inputs.
    """
    if convention not in CONVENTIONS:
        raise LmpressError(f"unknown perplexity convention {convention!r}; use {CONVENTIONS}")
    path: Path = resolve_text(text, purpose="eval")
    if convention == "gptq":
        return tokenizer(read_rows_joined(path), return_tensors="pt").input_ids[0]
    ids = tokenizer(read_text_file(path), return_tensors="pt").input_ids[0].clone()
    bos = tokenizer.bos_token_id
    probe = tokenizer("a").input_ids
    if bos is not None and probe and probe[0] == bos:
        ids[::ctx] = bos
    return ids


def first_scored(convention: str, ctx: int) -> int:
    """Index of the first scored prediction in a window (0, or half the window)."""
    return ctx // 2 if convention == "llamacpp" else 0


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


def _kl_and_top1(
    logits: torch.Tensor, base_logits: torch.Tensor, target: torch.Tensor, chunk: int = 512
):
    """Per position: ``KL(base || model)``, top-1 agreement, the change in the
    probability of the correct token (model minus base), and the change in its
    negative log-likelihood (model minus base). ``logits``/``base_logits`` float32
    ``[T, V]``, ``target`` int64 ``[T]``; four float tensors ``[T]`` (agreement bool)."""
    kls, agree, dps, dnll = [], [], [], []
    for s in range(0, logits.shape[0], chunk):
        lq = F.log_softmax(logits[s : s + chunk], dim=-1)
        lb = F.log_softmax(base_logits[s : s + chunk].to(torch.float32), dim=-1)
        kls.append((lb.exp() * (lb - lq)).sum(-1))
        agree.append(lq.argmax(-1) == lb.argmax(-1))
        t = target[s : s + chunk, None]
        lq_t, lb_t = lq.gather(-1, t)[:, 0], lb.gather(-1, t)[:, 0]
        dps.append(lq_t.exp() - lb_t.exp())
        dnll.append(lb_t - lq_t)
    return torch.cat(kls), torch.cat(agree), torch.cat(dps), torch.cat(dnll)


def distribution_stats(kl: torch.Tensor, agree: torch.Tensor, dp: torch.Tensor) -> AgreementStats:
    """llama.cpp's KL-divergence report from per-position values (float64 ``[N]`` each):
    mean KL with its standard error, percentiles, top-1 agreement with its standard
    error, and the mean / RMS change in the correct token's probability."""
    n = kl.numel()
    root_n = math.sqrt(max(n, 1))
    return AgreementStats(
        kl_mean=kl.mean().item(),
        kl_stderr=(kl.std() / root_n).item(),
        kl_median=kl.median().item(),
        kl_p99=torch.quantile(kl, 0.99).item(),
        kl_p999=torch.quantile(kl, 0.999).item(),
        kl_max=kl.max().item(),
        top1_agreement=agree.mean().item(),
        top1_stderr=(agree.std() / root_n).item(),
        delta_p_mean=dp.mean().item(),
        delta_p_stderr=(dp.std() / root_n).item(),
        delta_p_rms=dp.pow(2).mean().sqrt().item(),
        positions=n,
    )


def ppl_ratio_stats(dnll: list[torch.Tensor]) -> PplRatio:
    """Paired perplexity comparison with the base model on the same positions.

    ``dnll``: one float64 ``[T_i]`` tensor per window, the model's negative
    log-likelihood of each correct token minus the base's. Their mean is
    ``ln(PPL(model) / PPL(base))`` (llama.cpp's "Mean ln(PPL(Q)/PPL(base))"), with
    two standard errors: over positions (llama.cpp's, which treats neighbouring
    tokens as independent) and over windows (each window's mean as one sample,
    which does not; the one to trust when deciding a sign with few windows).
    The base's log-probabilities come from the float16 logit cache; its rounding
    is unbiased and far below these standard errors (a model scored against its own
    cache is tested to give a ratio of 1 within them).
    """
    d = torch.cat(dnll)
    n = d.numel()
    per_window = torch.stack([w.mean() for w in dnll])
    k = per_window.numel()
    return PplRatio(
        ln_ppl_ratio=d.mean().item(),
        ln_ppl_ratio_stderr=(d.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
        ln_ppl_ratio_stderr_windows=(
            (per_window.std() / math.sqrt(k)).item() if k > 1 else float("nan")
        ),
    )


def paired_difference(a: list[float], b: list[float], tokens: list[int]) -> tuple[float, float]:
    """``ln(PPL(a) / PPL(b))`` and its standard error over windows, from two models'
    per-window NLL sums (``a[i]``, ``b[i]`` over the same ``tokens[i]`` positions).

    Windows are the independent samples: the difference of each window's mean NLL.
    """
    if not (len(a) == len(b) == len(tokens)) or not a:
        raise ValueError("paired_difference needs per-window sums over the same windows")
    per_window = [(x - y) / t for x, y, t in zip(a, b, tokens, strict=True)]
    d = torch.tensor(per_window, dtype=torch.float64)
    mean = (sum(a) - sum(b)) / sum(tokens)
    se = (d.std() / math.sqrt(d.numel())).item() if d.numel() > 1 else float("nan")
    return mean, se


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    ctx: int = 2048,
    windows: int | None = 16,
    base_cache: BaseLogitsCache | None = None,
    progress: bool = True,
    first: int = 0,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``ids [n_tokens]``; with ``base_cache``, KL, top-1 and
    the paired ``ln(PPL / PPL(base))`` with its standard errors too.

    ``first`` skips the first predictions of each window (llama.cpp scores only the
    second half: ``first = ctx // 2``).
    """
    n = n_windows(ids, ctx, windows)
    nll, count = 0.0, 0
    window_nll, window_tokens = [], []
    kls, agrees, dps, dnlls = [], [], [], []
    t0 = time.perf_counter()
    for i in tqdm(range(n), desc="perplexity", unit="window", disable=not progress):
        logits = _window_logits(model, ids, ctx, i)[first:]
        target = ids[i * ctx + 1 + first : (i + 1) * ctx]
        w_nll = F.cross_entropy(logits, target, reduction="sum").item()
        nll += w_nll
        count += target.numel()
        window_nll.append(w_nll)
        window_tokens.append(target.numel())
        if base_cache is not None:
            kl, agree, dp, dnll = _kl_and_top1(logits, base_cache.get(i)[first:], target)
            kls.append(kl)
            agrees.append(agree)
            dps.append(dp)
            dnlls.append(dnll.to(torch.float64))
    seconds = time.perf_counter() - t0  # the scoring pass, not the statistics below
    agreement = ratio = None
    if kls:
        agreement = distribution_stats(
            torch.cat(kls).to(torch.float64),
            torch.cat(agrees).to(torch.float64),
            torch.cat(dps).to(torch.float64),
        )
        ratio = ppl_ratio_stats(dnlls)
    return PerplexityResult(
        ppl=math.exp(nll / count),
        nll_per_token=nll / count,
        ctx=ctx,
        windows=n,
        first_scored=first,
        tokens_scored=count,
        window_nll=window_nll,
        window_tokens=window_tokens,
        eval_seconds=seconds,
        agreement=agreement,
        ratio=ratio,
    )
