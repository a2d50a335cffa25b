"""Log-likelihood scoring of continuations, as lm-evaluation-harness computes it.

For a ``(context, continuation)`` pair: trailing spaces of the context move to
the continuation; the continuation's tokens are those of ``tokenize(context +
continuation)`` past ``tokenize(context)`` (no special tokens added; an empty
context is replaced by the BOS/EOS token); the model reads the last
``max_length + 1`` tokens minus one, and the continuation's log-probabilities
are summed. ``is_greedy`` says whether every continuation token is the argmax.

Metrics: ``acc`` (argmax of the summed log-likelihoods is the gold choice),
``acc_norm`` (the same after dividing by each choice's length in characters),
and for LAMBADA-style tasks ``acc`` = greedy match and ``ppl`` =
``exp(-mean log-likelihood)``. Standard errors: sample standard deviation over
``sqrt(n)`` for accuracies (lm-eval's ``mean_stderr``); for ``ppl`` the delta
method (lm-eval bootstraps it; the two agree to within their own noise).
"""

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lmpress.eval.result import Record
from lmpress.eval.tasks import MCExample


@dataclass
class Scored:
    loglik: float
    is_greedy: bool


@dataclass(frozen=True, kw_only=True)
class TaskResult(Record):
    """One task's scores over ``n`` examples, each metric with its standard error.

    Every task has ``acc``; multiple-choice tasks whose lm-eval definition has it also
    ``acc_norm`` (with ``predictions_norm``, the choice by length-normalised
    log-likelihood), LAMBADA-style tasks ``ppl``. ``predictions`` holds, per example,
    the chosen index (greedy tasks: 1 where the continuation was the greedy one).
    """

    n: int
    acc: float
    acc_stderr: float
    acc_norm: float | None = None
    acc_norm_stderr: float | None = None
    predictions_norm: list[int] | None = None
    ppl: float | None = None
    ppl_stderr: float | None = None
    predictions: list[int]

    def scores(self) -> dict[str, tuple[float, float]]:
        """``{metric: (value, standard error)}`` for the metrics this task has."""
        pairs = {
            "acc": (self.acc, self.acc_stderr),
            "acc_norm": (self.acc_norm, self.acc_norm_stderr),
            "ppl": (self.ppl, self.ppl_stderr),
        }
        return {m: (v, se) for m, (v, se) in pairs.items() if v is not None and se is not None}

    def to_dict(self, predictions: bool = True) -> dict[str, Any]:
        """The JSON row; ``predictions=False`` leaves out the per-example choices
        (a sweep keeps only the scores)."""
        row = super().to_dict()
        if not predictions:
            row = {k: v for k, v in row.items() if not k.startswith("predictions")}
        return row


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and ``continuation`` split the way lm-eval splits them."""
    if context == "":
        prefix = tokenizer.bos_token_id
        prefix = tokenizer.eos_token_id if prefix is None else prefix
        return [prefix], tokenizer(continuation, add_special_tokens=False).input_ids
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    ctx = tokenizer(context, add_special_tokens=False).input_ids
    return ctx, whole[len(ctx) :]


@torch.no_grad()
def score_requests(
    model: nn.Module,
    tokenizer,
    requests: list[tuple[str, str]],
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = True,
    desc: str = "loglikelihood",
) -> list[Scored]:
    """Summed log-probability of each continuation given its context, in input order."""
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    enc = []
    for c, t in requests:
        ctx, cont = encode_pair(tokenizer, c, t)
        whole = (ctx + cont)[-(max_length + 1) :]
        enc.append((whole[:-1], cont))
    # Longest first, as lm-eval does: the first batch shows at once whether memory suffices.
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i][0]))
    out: list[Scored | None] = [None] * len(enc)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = tqdm(total=len(enc), desc=desc, unit="req", disable=not progress)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        longest = max(len(enc[i][0]) for i in idx)
        ids = torch.full((len(idx), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        for r, i in enumerate(idx):
            toks = enc[i][0]
            ids[r, : len(toks)] = torch.tensor(toks)
            mask[r, : len(toks)] = 1
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for r, i in enumerate(idx):
            toks, cont = enc[i]
            n = len(toks)
            # the continuation's tokens are predicted at the last len(cont) input positions
            lp = F.log_softmax(logits[r, n - len(cont) : n].to(torch.float32), dim=-1)
            target = torch.tensor(cont)
            ll = float(lp.gather(-1, target[:, None]).sum())
            greedy = bool((lp.argmax(-1) == target).all())
            out[i] = Scored(ll, greedy)
        bar.update(len(idx))
    bar.close()
    return [o for o in out if o is not None]


def _mean_stderr(xs: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    m = sum(xs) / n
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def evaluate_task(
    model: nn.Module,
    tokenizer,
    examples: list[MCExample],
    metrics: tuple[str, ...],
    kind: str = "multiple_choice",
    batch_size: int = 16,
    progress: bool = True,
    name: str = "task",
) -> TaskResult:
    """Score ``examples`` by ``metrics`` (``kind="greedy"``: LAMBADA-style greedy match and
    perplexity of one continuation; else multiple choice)."""
    flat, owner = [], []
    for k, ex in enumerate(examples):
        reqs = ex.requests()
        flat += reqs
        owner += [k] * len(reqs)
    scored = score_requests(model, tokenizer, flat, batch_size, progress=progress, desc=name)
    per: list[list[Scored]] = [[] for _ in examples]
    for k, s in zip(owner, scored, strict=True):
        per[k].append(s)
    if kind == "greedy":
        return _greedy_result(per)
    return _choice_result(examples, per, metrics)


def _greedy_result(per: list[list[Scored]]) -> TaskResult:
    """Greedy match and perplexity of each example's one continuation."""
    acc = [float(p[0].is_greedy) for p in per]
    lls = [p[0].loglik for p in per]
    ppl = math.exp(-sum(lls) / len(lls))
    return TaskResult(
        n=len(per),
        acc=sum(acc) / len(acc),
        acc_stderr=_mean_stderr(acc),
        ppl=ppl,
        ppl_stderr=ppl * _mean_stderr(lls),  # the delta method
        predictions=[int(a) for a in acc],
    )


def _choice_result(
    examples: list[MCExample], per: list[list[Scored]], metrics: tuple[str, ...]
) -> TaskResult:
    """Accuracy of the most likely choice, and (if asked) of the length-normalised one."""
    preds, preds_norm = [], []
    for ex, p in zip(examples, per, strict=True):
        lls = [s.loglik for s in p]
        preds.append(max(range(len(lls)), key=lambda j: lls[j]))
        lens = [float(len(t)) for t in ex.choice_texts]
        normed = [ll / max(n, 1.0) for ll, n in zip(lls, lens, strict=True)]
        preds_norm.append(max(range(len(normed)), key=lambda j: normed[j]))
    acc = [float(p == ex.gold) for p, ex in zip(preds, examples, strict=True)]
    result = TaskResult(
        n=len(examples), acc=sum(acc) / len(acc), acc_stderr=_mean_stderr(acc), predictions=preds
    )
    if "acc_norm" not in metrics:
        return result
    an = [float(p == ex.gold) for p, ex in zip(preds_norm, examples, strict=True)]
    return replace(
        result,
        acc_norm=sum(an) / len(an),
        acc_norm_stderr=_mean_stderr(an),
        predictions_norm=preds_norm,
    )
