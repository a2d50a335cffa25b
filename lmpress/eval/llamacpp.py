"""Run an exported GGUF in llama.cpp (through the ``llama-cpp-python`` package).

Used to check that llama.cpp reads lmpress's GGUF files as lmpress means them
(teacher-forced next-token agreement) and to time llama.cpp's decoding beside
lmpress's on the same threads. The package is optional (``pip install
llama-cpp-python``; ``make bench`` installs it).
"""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lmpress.errors import LmpressError

# ggml's BLAS backend takes a matmul only when both sides have at least this many
# columns (ggml-blas.cpp's min_batch); a smaller micro-batch keeps every product on
# the CPU backend's quantized dot products.
BLAS_MIN_BATCH = 32


def llamacpp_has_blas() -> bool:
    """Whether the installed llama-cpp-python was built with ggml's BLAS backend."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return any((Path(llama_cpp.__file__).parent / "lib").glob("*ggml-blas*"))


@contextlib.contextmanager
def _no_weight_repacking() -> Iterator[None]:
    """Load models with ``use_extra_bufts`` off: repacked weights live in a buffer the
    BLAS backend cannot read, which would send their products back to the CPU path.

    ``Llama`` takes no such argument, so the module's default-parameter function is
    swapped for the duration of the block (not safe against loads in other threads).
    """
    import llama_cpp.llama_cpp as C

    default = C.llama_model_default_params

    def params():  # noqa: ANN202
        p = default()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params
    try:
        yield
    finally:
        C.llama_model_default_params = default


def _llama(path: Path, n_ctx: int, threads: int, logits_all: bool, n_ubatch: int = 512):
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise LmpressError("llama.cpp comparisons need: pip install llama-cpp-python") from e
    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=min(n_ctx, 512),
        n_ubatch=n_ubatch,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        verbose=False,
    )


def llamacpp_logits(
    path: str | Path, ids: list[int], threads: int = 2, float_path: bool = False
) -> torch.Tensor:
    """Teacher-forced logits ``[len(ids), vocab]`` float32 of llama.cpp on ``ids``.

    ``float_path=False``: llama.cpp's CPU backend, which rounds the activations of
    every quantized matmul to 8 bits (micro-batches below ``BLAS_MIN_BATCH`` tokens,
    so a BLAS build behaves the same). ``float_path=True`` (needs a BLAS build):
    512-token micro-batches without weight repacking, so ggml's BLAS backend
    dequantizes each weight to float32 and multiplies float activations.
    """
    if float_path and not llamacpp_has_blas():
        raise LmpressError(
            "llama.cpp's float path needs llama-cpp-python built with BLAS: "
            "scripts/install_llamacpp.sh (with libopenblas-dev installed)"
        )
    n_ctx = len(ids) + 8
    if float_path:
        with _no_weight_repacking():
            llm = _llama(Path(path), n_ctx, threads, logits_all=True, n_ubatch=512)
    else:
        llm = _llama(Path(path), n_ctx, threads, logits_all=True, n_ubatch=BLAS_MIN_BATCH // 2)
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return torch.from_numpy(scores)


def llamacpp_decode_speed(
    path: str | Path, prompt_ids: list[int], new_tokens: int, threads: int = 2
) -> dict[str, float | list[int]]:
    """Greedy decoding in llama.cpp: prefill seconds, per-token seconds, tokens/s, ids."""
    # logits_all: llama-cpp-python 0.3 writes `scores` only then (its own sampler reads
    # the logits otherwise); without it every argmax below read a stale row. It costs
    # the prompt's full logits in the prefill, which the per-token times do not include.
    llm = _llama(Path(path), len(prompt_ids) + new_tokens + 8, threads, logits_all=True)
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
