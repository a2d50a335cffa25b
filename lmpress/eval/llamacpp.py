"""Run an exported GGUF in llama.cpp (through the ``llama-cpp-python`` package).

Used to check that llama.cpp reads lmpress's GGUF files as lmpress means them
(teacher-forced next-token agreement) and to time llama.cpp's decoding beside
lmpress's on the same threads. The package is optional (``pip install
llama-cpp-python``; ``make bench`` installs it).
"""

import time
from pathlib import Path

import numpy as np
import torch

from lmpress.errors import LmpressError


def _llama(path: Path, n_ctx: int, threads: int, logits_all: bool):
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise LmpressError("llama.cpp comparisons need: pip install llama-cpp-python") from e
    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=min(n_ctx, 512),
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        verbose=False,
    )


def llamacpp_logits(path: str | Path, ids: list[int], threads: int = 2) -> torch.Tensor:
    """Teacher-forced logits ``[len(ids), vocab]`` float32 of llama.cpp on ``ids``."""
    llm = _llama(Path(path), len(ids) + 8, threads, logits_all=True)
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return torch.from_numpy(scores)


def llamacpp_decode_speed(
    path: str | Path, prompt_ids: list[int], new_tokens: int, threads: int = 2
) -> dict[str, float | list[int]]:
    """Greedy decoding in llama.cpp: prefill seconds, per-token seconds, tokens/s, ids."""
    llm = _llama(Path(path), len(prompt_ids) + new_tokens + 8, threads, logits_all=False)
    t0 = time.perf_counter()
    llm.eval(prompt_ids)
    prefill = time.perf_counter() - t0
    out, times = [], []
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    for _ in range(new_tokens - 1):
        out.append(tok)
        t0 = time.perf_counter()
        llm.eval([tok])
        times.append(time.perf_counter() - t0)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out.append(tok)
    llm.close()
    return {
        "prefill_s": prefill,
        "per_token_s": times,
        "tokens_per_s": len(times) / sum(times) if times else 0.0,
        "ids": out,
    }
