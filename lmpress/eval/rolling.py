"""lm-evaluation-harness's WikiText convention: word and byte perplexity of whole documents.

lm-eval's ``wikitext`` task (its ``loglikelihood_rolling`` output type) scores
every article of the test split as one document:

- the file is cut into articles at top-level headings (`` = Title = ``), each
  article's lines joined by newlines (the ``EleutherAI/wikitext_document_level``
  layout);
- the article is detokenized (``@-@`` -> ``-``, spaces before punctuation and
  inside brackets and quotes dropped, ...: :data:`DETOKENIZE_RULES`) and tokenized
  without special tokens;
- the tokens are cut into disjoint windows of ``max_length`` predictions; the
  first window is preceded by the prefix token (BOS, else EOS), each later one
  sees the tokens before it back to ``max_length`` tokens;
- the log-likelihoods of all tokens of all documents are summed, and
  ``word_perplexity = exp(-sum ll / words)``, ``byte_perplexity = exp(-sum ll /
  bytes)``, ``bits_per_byte = -sum ll / (bytes ln 2)``, where words
  (``re.split(r"\\s+")`` pieces) and UTF-8 bytes are counted on the article
  *before* detokenization.

``max_length`` defaults, as lm-eval's ``HFLM`` does, to the model's
``max_position_embeddings``. These figures are per word and per byte, so unlike
token perplexity they compare across tokenizers. (Rules and formulas after
lm-evaluation-harness, ``lm_eval/tasks/wikitext``; the test in
``tests/test_rolling.py`` checks them against lm-eval itself.)
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from lmpress.data import read_text_file
from lmpress.errors import LmpressError
from lmpress.eval.result import Record

_TOP_HEADING = re.compile(r"^ ?= [^=].* = ?$")

# (pattern, replacement, is_regex), applied in order.
DETOKENIZE_RULES: tuple[tuple[str, str, bool], ...] = (
    ("s '", "s'", False),
    (r"/' [0-9]/", r"/'[0-9]/", True),
    (" @-@ ", "-", False),
    (" @,@ ", ",", False),
    (" @.@ ", ".", False),
    *((f" {p} ", f"{p} ", False) for p in ":;.!?,"),
    (r"\(\s*([^\)]*?)\s*\)", r"(\1)", True),
    (r"\[\s*([^\]]*?)\s*\]", r"[\1]", True),
    (r"{\s*([^}]*?)\s*}", r"{\1}", True),
    (r"\"\s*([^\"]*?)\s*\"", r'"\1"', True),
    (r"'\s*([^']*?)\s*'", r"'\1'", True),
    ("= = = =", "====", False),
    ("= = =", "===", False),
    ("= =", "==", False),
    (" \u00b0 ", "\u00b0", False),
    (" \n", "\n", False),
    ("\n ", "\n", False),
    (" N ", " 1 ", False),
    (" 's", "'s", False),
)


@dataclass(frozen=True, kw_only=True)
class RollingPerplexityResult(Record):
    """lm-eval's wikitext figures over ``documents`` whole articles: perplexity per
    word, per UTF-8 byte and per token, and bits per byte; ``words`` and ``bytes`` are
    counted before detokenization, ``max_length`` is the window in predictions."""

    convention: ClassVar[str] = "lm-eval"

    word_perplexity: float
    byte_perplexity: float
    bits_per_byte: float
    token_perplexity: float
    documents: int
    words: int
    bytes: int
    tokens: int
    max_length: int

    def to_dict(self) -> dict[str, Any]:
        # the rows have always named the convention first
        return {"convention": self.convention, **super().to_dict()}


def detokenize(text: str) -> str:
    """WikiText's tokenized spacing undone, by lm-eval's wikitext rules."""
    for pattern, repl, is_regex in DETOKENIZE_RULES:
        text = re.sub(pattern, repl, text) if is_regex else text.replace(pattern, repl)
    return text


def wikitext_documents(path: Path) -> list[str]:
    """The articles of a raw WikiText file, each its lines joined by ``"\\n"``."""
    lines = read_text_file(path).replace("\r\n", "\n").split("\n")
    docs, cur = [], []
    for line in lines:
        if _TOP_HEADING.match(line) and cur:
            docs.append("\n".join(cur))
            cur = []
        cur.append(line)
    if cur:
        docs.append("\n".join(cur))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise LmpressError(f"{path} holds no text")
    return docs


def rolling_windows(
    tokens: list[int], prefix: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Disjoint ``(input, targets)`` windows covering every token once.

    ``input`` has ``len(targets)`` or more tokens (at most ``max_length``), and its
    last ``len(targets)`` positions predict ``targets``.
    """
    if max_length < 1:
        raise LmpressError(f"max_length must be positive, got {max_length}")
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    out = [([prefix] + tokens[: first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        end = min(len(tokens), done + max_length)
        start = max(0, end - max_length - 1)
        out.append((tokens[start : end - 1], tokens[done:end]))
        done = end
    return out


def prefix_token(tokenizer) -> int:
    """lm-eval's prefix for a document: BOS when the tokenizer has one, else EOS."""
    tok = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tok is None:
        raise LmpressError("the tokenizer has neither a BOS nor an EOS token to start documents")
    return tok


@torch.no_grad()
def document_loglik(model: nn.Module, windows: list[tuple[list[int], list[int]]]) -> float:
    """Summed log-probability (float64) of every window's targets, one forward per window."""
    total = 0.0
    for inp, tgt in windows:
        x = torch.tensor([inp])
        logits = model(x, use_cache=False).logits[0, -len(tgt) :].to(torch.float32)
        # gather minus logsumexp: no second [window, vocab] tensor (1.6 GB at 8192 x 49152)
        picked = logits.gather(1, torch.tensor(tgt).unsqueeze(1)).squeeze(1)
        total += float((picked - torch.logsumexp(logits, dim=-1)).double().sum())
    return total


def word_byte_perplexity(
    model: nn.Module,
    tokenizer,
    path: Path,
    max_length: int | None = None,
    documents: int | None = None,
    progress: bool = True,
) -> RollingPerplexityResult:
    """lm-eval's wikitext figures for the first ``documents`` articles of ``path``."""
    if max_length is None:
        max_length = getattr(model.config, "max_position_embeddings", None) or 2048
    docs = wikitext_documents(path)[:documents]
    prefix = prefix_token(tokenizer)
    ll = 0.0
    words = n_bytes = n_tokens = 0
    for doc in tqdm(docs, desc="documents", unit="doc", disable=not progress):
        tokens = tokenizer(detokenize(doc), add_special_tokens=False).input_ids
        ll += document_loglik(model, rolling_windows(tokens, prefix, max_length))
        words += len(re.split(r"\s+", doc))
        n_bytes += len(doc.encode("utf-8"))
        n_tokens += len(tokens)
    return RollingPerplexityResult(
        word_perplexity=math.exp(-ll / words),
        byte_perplexity=math.exp(-ll / n_bytes),
        bits_per_byte=-ll / (n_bytes * math.log(2)),
        token_perplexity=math.exp(-ll / n_tokens),
        documents=len(docs),
        words=words,
        bytes=n_bytes,
        tokens=n_tokens,
        max_length=max_length,
    )
