"""Asymmetric numeral systems over a static histogram, in independent chunks.

The coder is ``constriction``'s ANS stack coder (Bamler, 2022), which runs in Rust; a
stream is cut into chunks of ``chunk`` symbols so that decoding can be split up and
no chunk's state grows with the tensor. The histogram is stored with the stream: the
decoder rebuilds the same model from it.
"""

from dataclasses import dataclass

import numpy as np

from lmpress.errors import LmpressError

CHUNK = 1 << 20


def _coder():
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - a dependency
        raise LmpressError(
            "entropy coding needs the 'constriction' package: pip install constriction"
        ) from e
    return constriction


@dataclass
class EntropyCoded:
    """``n`` symbols of an alphabet of ``len(counts)``: ``words`` uint32, the chunks'
    compressed streams back to back, chunk ``i`` at ``words[offsets[i]:offsets[i+1]]``
    (``offsets`` int64 ``[chunks + 1]``, at least one chunk), each of ``chunk``
    symbols (the last of the rest); ``counts`` uint64, the histogram the model was built from."""

    words: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    n: int
    chunk: int

    def nbytes(self) -> int:
        """Bytes stored: the streams, the chunk offsets and the histogram."""
        return int(self.words.nbytes + self.offsets.nbytes + self.counts.nbytes + 16)


def _model(counts: np.ndarray):
    prob = counts.astype(np.float64)
    return _coder().stream.model.Categorical(prob / prob.sum(), perfect=False)


def encode(symbols: np.ndarray, alphabet: int, chunk: int = CHUNK) -> EntropyCoded:
    """Entropy-code integer ``symbols`` (any shape, values in ``[0, alphabet)``)."""
    s = np.ascontiguousarray(symbols).reshape(-1)
    if chunk < 1 or not np.issubdtype(s.dtype, np.integer) and s.size:
        raise ValueError("symbols must be integers and chunk at least 1")
    if s.size and (int(s.min()) < 0 or int(s.max()) >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet})")
    counts = np.bincount(s, minlength=max(alphabet, 2)).astype(np.uint64)
    if (counts > 0).sum() < 2:
        # constriction's model needs two symbols with mass: lend one to an unused symbol
        counts[int(np.flatnonzero(counts == 0)[0])] = 1
    model = _model(counts)
    s32 = s.astype(np.int32)
    parts, offsets = [], [0]
    for i in range(0, max(s.size, 1), chunk):
        coder = _coder().stream.stack.AnsCoder()
        coder.encode_reverse(s32[i : i + chunk], model)
        words = coder.get_compressed()
        parts.append(words)
        offsets.append(offsets[-1] + words.size)
    words = np.concatenate(parts).astype(np.uint32)
    return EntropyCoded(words, np.asarray(offsets, dtype=np.int64), counts, int(s.size), chunk)


def decode(coded: EntropyCoded) -> np.ndarray:
    """The symbols ``encode`` was given, int32 ``[n]``."""
    model = _model(coded.counts)
    out = np.empty(coded.n, dtype=np.int32)
    for c, i in enumerate(range(0, coded.n, coded.chunk)):
        k = min(coded.chunk, coded.n - i)
        words = coded.words[coded.offsets[c] : coded.offsets[c + 1]]
        out[i : i + k] = _coder().stream.stack.AnsCoder(words).decode(model, k)
    return out
