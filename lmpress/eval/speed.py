"""Prefill and decode speed, and peak memory, of one model, measured in its own process.

:func:`measure_speed` times greedy generation from a fixed prompt with the
engine a user gets (lmpress's lean decoder where it applies, else transformers'
forward with its KV cache): one warm-up run, then ``reps`` timed runs; prefill
tokens/s is the median over runs of prompt length / prefill seconds, decode
tokens/s the median over runs of 1 / (median per-token seconds after ``warmup``
tokens). Peak RSS is the process's high-water mark, so it is meaningful only in
a process that loaded nothing else; ``python -m lmpress.eval.speed MODEL`` is
that process (the sweep runs it once per cell)::

    python -m lmpress.eval.speed out/smol-w4 --prompt-tokens 128 --new-tokens 32 --json
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace

from torch import nn

from lmpress.eval.result import Record


@dataclass(frozen=True, kw_only=True)
class SpeedResult(Record):
    """Greedy generation speed of one model (medians over ``reps`` runs); ``load_s`` and
    ``peak_rss_mb`` are set where the measuring process loaded the model itself
    (:func:`speed_of`)."""

    engine: str
    prompt_tokens: int
    new_tokens: int
    reps: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    load_s: float | None = None
    peak_rss_mb: float | None = None


def median_rate(per_token: list[float], warmup: int) -> float:
    """Tokens/s from the median per-token time after ``warmup`` tokens."""
    t = per_token[warmup:] or per_token
    return 1.0 / statistics.median(t)


def measure_speed(
    model: nn.Module, prompt_ids: list[int], new_tokens: int = 32, reps: int = 3, warmup: int = 4
) -> SpeedResult:
    """Prefill / decode tokens/s (medians over ``reps`` runs after one warm-up run)."""
    from lmpress.runtime import generate_ids

    prefill, decode, engine = [], [], "?"
    for r in range(reps + 1):
        _ids, pre, _dec, engine, times = generate_ids(model, prompt_ids, new_tokens)
        if r:  # the first run pays one-time costs (kernel path choice, weight layouts)
            prefill.append(len(prompt_ids) / pre)
            decode.append(median_rate(times[1:], warmup))
    return SpeedResult(
        engine=engine,
        prompt_tokens=len(prompt_ids),
        new_tokens=new_tokens,
        reps=reps,
        prefill_tokens_per_s=statistics.median(prefill),
        decode_tokens_per_s=statistics.median(decode),
    )


def speed_of(
    model_spec: str,
    text: str = "wikitext2",
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    reps: int = 3,
) -> SpeedResult:
    """Load ``model_spec`` here, measure it, and add load seconds and this process's peak RSS."""
    from lmpress.api import peak_rss_mb
    from lmpress.eval.perplexity import eval_ids
    from lmpress.models.load import load_model

    t0 = time.perf_counter()
    loaded = load_model(model_spec)
    load_s = time.perf_counter() - t0
    prompt = eval_ids(loaded.tokenizer, text)[:prompt_tokens].tolist()
    res = measure_speed(loaded.model.eval(), prompt, new_tokens, reps)
    return replace(res, load_s=load_s, peak_rss_mb=round(peak_rss_mb(), 1))


def speed_in_subprocess(model_spec: str, text: str = "wikitext2", **kw) -> SpeedResult:
    """:func:`speed_of` in a fresh Python process (so its peak RSS is the model's own)."""
    import os
    import subprocess
    from pathlib import Path

    from lmpress.errors import LmpressError

    args = [sys.executable, "-m", "lmpress.eval.speed", str(model_spec), "--json", "--text", text]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise LmpressError(f"speed measurement of {model_spec} failed: {p.stderr.strip()[-500:]}")
    return SpeedResult(**json.loads(p.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="prefill/decode tokens/s and peak RSS of one model")
    ap.add_argument("model")
    ap.add_argument("--text", default="wikitext2", help="the prompt is this text's first tokens")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    from lmpress.errors import LmpressError
    from lmpress.models.load import set_threads

    try:
        set_threads()  # a process of its own: every core, as the CLI
        res = speed_of(a.model, a.text, a.prompt_tokens, a.new_tokens, a.reps)
    except LmpressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res.to_dict()))
    else:
        print(
            f"prefill {res.prefill_tokens_per_s:.1f} tok/s, decode "
            f"{res.decode_tokens_per_s:.1f} tok/s ({res.engine}), peak RSS "
            f"{res.peak_rss_mb:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
