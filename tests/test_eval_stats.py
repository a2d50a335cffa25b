"""Perplexity conventions and llama.cpp-style distribution statistics."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from lmpress.eval.base_cache import BaseLogitsCache
from lmpress.eval.perplexity import (
    distribution_stats,
    eval_ids,
    evaluate_perplexity,
    fill_base_cache,
    first_scored,
    paired_difference,
)


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\n".join(f"Line {i} of a small text about tests and numbers." for i in range(80)))
    return p


def test_llamacpp_convention_scores_second_half(smol_tokenizer, text_file):
    model = tiny_model("llama", vocab=len(smol_tokenizer))
    ctx = 64
    ids = eval_ids(smol_tokenizer, str(text_file), "llamacpp", ctx)
    assert torch.equal(ids, smol_tokenizer(text_file.read_text(), return_tensors="pt").input_ids[0])
    first = first_scored("llamacpp", ctx)
    r = evaluate_perplexity(model, ids, ctx, 3, None, progress=False, first=first)
    assert r.tokens_scored == 3 * (ctx - 1 - ctx // 2) and r.first_scored == 32
    nll = 0.0
    with torch.no_grad():
        for i in range(3):
            w = ids[i * ctx : (i + 1) * ctx]
            logits = model(w[None]).logits[0, :-1].float()
            nll += F.cross_entropy(logits[first:], w[1 + first :], reduction="sum").item()
    assert math.isclose(r.ppl, math.exp(nll / r.tokens_scored), rel_tol=1e-5)
    assert r.agreement is None and r.ratio is None  # no base model given
    assert first_scored("gptq", ctx) == 0


def _scored_against_itself(root, tokenizer, text_file, windows: int):
    """A tiny base model, its eval ids, its logit cache over ``windows`` windows of 64,
    and the base's own evaluation against that cache."""
    model = tiny_model("llama", vocab=len(tokenizer))
    ids = eval_ids(tokenizer, str(text_file))
    cache = BaseLogitsCache("k", root=root)
    fill_base_cache(model, ids, 64, windows, cache, progress=False)
    return ids, cache, evaluate_perplexity(model, ids, 64, windows, cache, progress=False)


def test_distribution_stats_against_self_and_other(tmp_path, smol_tokenizer, text_file):
    ids, cache, same = _scored_against_itself(tmp_path, smol_tokenizer, text_file, 2)
    g = same.agreement
    assert g.kl_mean < 1e-3 and g.top1_agreement > 0.99
    assert abs(g.delta_p_mean) < 1e-3 and g.positions == 2 * 63
    other = evaluate_perplexity(
        tiny_model("llama", len(smol_tokenizer), seed=1), ids, 64, 2, cache, progress=False
    ).agreement
    assert other.kl_mean > 10 * g.kl_mean + 1e-3
    assert other.kl_median <= other.kl_p99 <= other.kl_p999 <= other.kl_max
    s = distribution_stats(
        torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64),
        torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64),
        torch.tensor([0.1, -0.1, 0.1, -0.1], dtype=torch.float64),
    )
    assert s.kl_mean == 1.5 and s.top1_agreement == 0.75
    assert s.delta_p_mean == 0.0 and math.isclose(s.delta_p_rms, 0.1)


def test_paired_perplexity_ratio_against_the_base(tmp_path, smol_tokenizer, text_file):
    """ln(PPL/PPL(base)) is paired on the same positions, and two runs pair by window."""
    ids, cache, same = _scored_against_itself(tmp_path, smol_tokenizer, text_file, 3)
    # only the float16 rounding of the cached logits separates the base from itself
    assert abs(same.ratio.ln_ppl_ratio) < 1e-4 and same.window_tokens == [63] * 3
    assert math.isclose(sum(same.window_nll) / 189, math.log(same.ppl), rel_tol=1e-12)
    other = evaluate_perplexity(
        tiny_model("llama", len(smol_tokenizer), seed=1), ids, 64, 3, cache, progress=False
    )
    want = math.log(other.ppl / same.ppl)
    assert math.isclose(other.ratio.ln_ppl_ratio, want, abs_tol=1e-4)
    assert other.ratio.ln_ppl_ratio_stderr > 0 and other.ratio.ln_ppl_ratio_stderr_windows > 0
    d, se = paired_difference(other.window_nll, same.window_nll, same.window_tokens)
    assert math.isclose(d, want, rel_tol=1e-9) and se > 0
    # window means of the difference: a constant shift has no spread
    d0, se0 = paired_difference([2.0, 4.0], [1.0, 2.0], [1, 2])
    assert d0 == 1.0 and se0 == 0.0
    with pytest.raises(ValueError, match="same windows"):
        paired_difference([1.0], [1.0, 2.0], [1, 1])


def test_second_evaluation_reads_the_cached_base(tmp_path, monkeypatch, tiny_llama_dir):
    """Issue 4's cache: the base model is loaded and run once for any number of variants."""
    import lmpress.api as api

    monkeypatch.setenv("LMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    text = tmp_path / "t.txt"
    text.write_text("\n".join(f"Row {i}: some words for the base cache." for i in range(100)))
    kw = dict(text=str(text), ctx=64, windows=2, base=str(tiny_llama_dir), progress=False)
    first = api.evaluate(str(tiny_llama_dir), **kw).perplexity
    assert first.agreement.kl_mean < 1e-6

    def must_not_run(*a, **k):
        raise AssertionError("the base was run again although its logits are cached")

    monkeypatch.setattr(api, "fill_base_cache", must_not_run)
    again = api.evaluate(str(tiny_llama_dir), **kw).perplexity
    assert again.ppl == first.ppl and again.agreement == first.agreement
