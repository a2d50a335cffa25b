"""Calibration samples: ``n_samples`` windows of ``seq_len`` tokens, chosen with a seed."""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lmpress.data import read_rows_joined, resolve_text
from lmpress.errors import LmpressError


@dataclass(frozen=True)
class CalibConfig:
    source: str = "wikitext2"
    n_samples: int = 128
    seq_len: int = 512
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def calibration_ids(
    tokenizer, source: "str | list[str]", n_samples: int, seq_len: int, seed: int = 0
) -> torch.Tensor:
    """Token ids ``int64 [n_samples, seq_len]`` cut at seeded random offsets of the text.

    ``source`` is a built-in dataset name, a text file path, or a list of strings.
    """
    if n_samples <= 0 or seq_len <= 1:
        raise LmpressError("calibration needs n_samples >= 1 and seq_len >= 2")
    if isinstance(source, list):
        text = "\n\n".join(source)
    else:
        path: Path = resolve_text(source, purpose="calib")
        text = read_rows_joined(path)
    if not text.strip():
        raise LmpressError(
            f"calibration text {source if isinstance(source, str) else '(list)'} is empty"
        )
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    if ids.numel() <= seq_len:
        raise LmpressError(
            f"calibration text has {ids.numel()} tokens, fewer than seq_len={seq_len}; "
            "give more text or a shorter --calib-seq-len"
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_samples,), generator=gen)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
