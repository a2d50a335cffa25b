"""lm-eval's WikiText word/byte perplexity convention (lmpress.eval.rolling)."""

import math

import pytest
from conftest import needs_data, tiny_config

from lmpress.data import resolve_text
from lmpress.errors import LmpressError
from lmpress.eval.rolling import (
    detokenize,
    rolling_windows,
    wikitext_documents,
    word_byte_perplexity,
)


def test_rolling_windows_cover_every_token_once():
    toks = list(range(100, 123))
    wins = rolling_windows(toks, prefix=7, max_length=5)
    targets = [t for _, tgt in wins for t in tgt]
    assert targets == toks
    assert wins[0][0][0] == 7
    for inp, tgt in wins:
        assert len(tgt) <= len(inp) <= 5
        # the last len(tgt) inputs are the tokens right before each target
        start = toks.index(tgt[0])
        want = ([7] + toks)[start : start + len(tgt)]
        assert inp[-len(tgt) :] == want
    assert rolling_windows([], 7, 5) == []
    with pytest.raises(LmpressError):
        rolling_windows(toks, 7, 0)


def test_detokenize_rules():
    assert detokenize("a @-@ b , c ( d ) 1 @,@ 000") == "a-b, c (d) 1,000"
    assert detokenize(" = = Career = = \n text") == " == Career ==\ntext"


@needs_data
def test_documents_are_articles():
    docs = wikitext_documents(resolve_text("wikitext2"))
    assert len(docs) == 62  # the test split's articles, as in wikitext_document_level
    assert docs[0].startswith(" = Robert Boulter = ")
    assert all("\r" not in d for d in docs)


@needs_data
def test_word_byte_perplexity_equals_lm_eval(smol_tokenizer, tmp_path):
    """lm-eval's own wikitext task (detokenizer, rolling windows, counts) gives the same."""
    pytest.importorskip("lm_eval")
    from transformers import AutoModelForCausalLM

    from lmpress.eval.lm_eval_bridge import run_lm_eval_wikitext

    model = AutoModelForCausalLM.from_config(
        tiny_config("llama", len(smol_tokenizer), max_position_embeddings=64)  # many windows
    ).eval()
    docs = [d[:1500] for d in wikitext_documents(resolve_text("wikitext2"))[:3]]
    f = tmp_path / "cut.raw"
    f.write_text("\n".join(docs), encoding="utf-8")
    assert wikitext_documents(f) == docs
    ours = word_byte_perplexity(model, smol_tokenizer, f, progress=False)
    theirs = run_lm_eval_wikitext(model, smol_tokenizer, docs)
    assert ours.max_length == 64 and ours.documents == 3
    for k in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        mine = getattr(ours, k)
        assert math.isclose(mine, theirs[k], rel_tol=1e-4), (k, mine, theirs[k])
