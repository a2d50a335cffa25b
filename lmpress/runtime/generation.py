"""Text generation: sampling, the token loop, and :func:`generate` for users.

Two engines produce the logits: ``lmpress``, the lean decoder on the C kernels
(:class:`~lmpress.runtime.decoder.Decoder`, for the families it runs), and
``transformers``, the model's own forward with its KV cache, which works on any
lmpress model. ``auto`` picks the first where it handles the model.
"""

import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from lmpress.errors import LmpressError
from lmpress.runtime.decoder import Decoder, can_decode


@dataclass
class GenerationResult:
    """What :func:`generate` produced and how long it took (seconds, wall clock)."""

    ids: list[int]  # new tokens only
    text: str
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    engine: str  # "lmpress" or "transformers"
    per_token_s: list[float] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        """New tokens per second of decoding, the prefill's token left out."""
        n = max(len(self.ids) - 1, 0)  # the first new token comes from the prefill
        return n / self.decode_s if self.decode_s > 0 else 0.0


def sample(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    gen: torch.Generator | None,
) -> int:
    """One token id from ``logits [vocab]``: greedy at temperature 0, else softmax
    sampling at ``temperature`` with optional top-k (``top_k > 0``) and top-p
    (``0 < top_p < 1``), drawn from ``gen``."""
    if temperature <= 0:
        return int(logits.argmax())
    z = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(z, min(top_k, z.numel())).values[-1]
        z = torch.where(z < kth, torch.full_like(z, -float("inf")), z)
    probs = torch.softmax(z, -1)
    if 0 < top_p < 1:
        sp, si = torch.sort(probs, descending=True)
        keep = sp.cumsum(0) - sp < top_p
        probs = torch.zeros_like(probs).scatter(0, si[keep], sp[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))


def generate_ids(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos: set[int] | None = None,
    engine: str = "auto",
    on_token: Callable[[int], None] | None = None,
) -> tuple[list[int], float, float, str, list[float]]:
    """New token ids, prefill seconds, decode seconds, engine used, per-token seconds.

    ``engine``: ``lmpress``, ``transformers`` or ``auto`` (see the module docstring);
    ``on_token`` sees every new id as it is sampled."""
    gen = torch.Generator().manual_seed(seed)
    eos = eos or set()
    if engine == "auto":
        engine = "lmpress" if can_decode(model) else "transformers"
    if engine == "lmpress":
        dec = Decoder(model, max_len=len(prompt_ids) + max_new_tokens + 1)
        t0 = time.perf_counter()
        logits = dec.prefill(prompt_ids)
        prefill = time.perf_counter() - t0
        step = dec.step
    elif engine == "transformers":
        kw = _cache_keyword(model)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(torch.tensor([prompt_ids]), use_cache=True)
        prefill = time.perf_counter() - t0
        state = {"cache": getattr(out, kw)}
        logits = out.logits[0, -1]

        def step(tok: int) -> torch.Tensor:
            with torch.no_grad():
                o = model(torch.tensor([[tok]]), use_cache=True, **{kw: state["cache"]})
            state["cache"] = getattr(o, kw)
            return o.logits[0, -1]

    else:
        raise LmpressError(f"unknown engine {engine!r}; use auto, lmpress or transformers")
    steps = _loop(step, logits, max_new_tokens, temperature, top_k, top_p, gen, eos, on_token)
    ids, times = [], []
    for tok, dt in steps:
        ids.append(tok)
        times.append(dt)
    return ids, prefill, sum(times), engine, times


def _cache_keyword(model: nn.Module) -> str:
    """transformers 5.2x calls the KV cache ``cache``; earlier versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _loop(
    step: Callable[[int], torch.Tensor],
    logits: torch.Tensor,
    n: int,
    temperature: float,
    top_k: int,
    top_p: float,
    gen: torch.Generator,
    eos: set[int],
    on_token: Callable[[int], None] | None,
) -> Iterator[tuple[int, float]]:
    """Yield ``(token, seconds spent computing the logits that follow it)``, up to ``n``
    tokens or the first one in ``eos``."""
    for i in range(n):
        tok = sample(logits, temperature, top_k, top_p, gen)
        if on_token is not None:
            on_token(tok)
        if tok in eos or i == n - 1:
            yield tok, 0.0
            return
        t0 = time.perf_counter()
        logits = step(tok)
        yield tok, time.perf_counter() - t0


def generate(
    model: str | nn.Module,
    prompt: str,
    max_new_tokens: int = 64,
    tokenizer=None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    engine: str = "auto",
    stop_at_eos: bool = True,
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Generate text from ``prompt`` with a loaded lmpress model or a checkpoint path.

    ``engine``: ``lmpress`` (the lean decoder on the C kernels), ``transformers``
    (the model's own forward with its KV cache), or ``auto`` (the first when it
    handles the model). Greedy at ``temperature`` 0.
    """
    if isinstance(model, str):
        from lmpress.models.load import load_model

        loaded = load_model(model)
        model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise LmpressError("generation needs the model's tokenizer")
    if max_new_tokens <= 0:
        raise LmpressError("max_new_tokens must be a positive integer")
    prompt_ids = tokenizer(prompt).input_ids
    if not prompt_ids:
        raise LmpressError("the prompt is empty; give some text with --prompt")
    from lmpress.models.checks import max_positions

    limit = max_positions(getattr(model, "config", None))
    if limit is not None and len(prompt_ids) + max_new_tokens > limit:
        room = limit - len(prompt_ids)
        fix = f"use --max-new-tokens {room} or less" if room > 0 else "shorten the prompt"
        raise LmpressError(
            f"the prompt's {len(prompt_ids)} tokens and {max_new_tokens} new ones exceed the "
            f"model's {limit} positions; {fix}"
        )
    eos = set()
    if stop_at_eos and tokenizer.eos_token_id is not None:
        eos = {int(tokenizer.eos_token_id)}
    printed = [""]

    def stream(_tok: int, ids: list[int] = []) -> None:  # noqa: B006 - the running output
        ids.append(_tok)
        if on_text is not None:
            text = tokenizer.decode(ids, skip_special_tokens=True)
            on_text(text[len(printed[0]) :])
            printed[0] = text

    ids, prefill, decode, used, times = generate_ids(
        model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, eos, engine, stream
    )
    return GenerationResult(
        ids=ids,
        text=tokenizer.decode(ids, skip_special_tokens=True),
        prompt_tokens=len(prompt_ids),
        prefill_s=prefill,
        decode_s=decode,
        engine=used,
        per_token_s=times,
    )
