"""The Python API: ``quantize``, ``save``, ``load``, ``evaluate``."""

import resource
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmpress.__version__ import __version__
from lmpress.calibration import CalibConfig, calibration_ids
from lmpress.checkpoint import load_checkpoint, save_checkpoint
from lmpress.data import resolve_text
from lmpress.errors import LmpressError
from lmpress.eval.base_cache import BaseLogitsCache, cache_key
from lmpress.eval.loglik import TaskResult
from lmpress.eval.perplexity import (
    PerplexityResult,
    eval_ids,
    evaluate_perplexity,
    fill_base_cache,
    first_scored,
)
from lmpress.eval.result import EvalResult
from lmpress.eval.rolling import RollingPerplexityResult, word_byte_perplexity
from lmpress.eval.size import model_size_stats
from lmpress.models.load import load_model
from lmpress.pipeline import QuantizeResult, quantize_model
from lmpress.recipe import Recipe


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's ``VmHWM`` is per address space, so it starts afresh at ``exec``;
    ``ru_maxrss`` (the fallback) also counts the pages a forked child briefly
    shared with its parent, which overstates a child started by a big process.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def as_recipe(recipe: "Recipe | dict | str | Path") -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe)
    return Recipe.from_yaml(recipe)


def quantize(
    model: "str | nn.Module",
    recipe: "Recipe | dict | str | Path",
    calib: "str | list[str] | None" = "wikitext2",
    tokenizer=None,
    calib_config: CalibConfig | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize ``model`` (a spec such as ``smollm2-135m`` or a loaded model) by ``recipe``.

    Returns a :class:`QuantizeResult` whose ``model`` holds ``QLinear`` modules;
    ``result.tokenizer`` and ``result.metadata`` are set for :func:`save`.
    """
    recipe = as_recipe(recipe)
    source = "in-memory model"
    if isinstance(model, str):
        loaded = load_model(model)
        model, tokenizer, source = loaded.model, loaded.tokenizer, loaded.source
    cc = calib_config or CalibConfig(source=calib if isinstance(calib, str) else "list")
    ids = None
    if recipe.needs_calibration:
        if calib is None:
            raise LmpressError(f"method {recipe.label!r} needs calibration text; pass --calib")
        if tokenizer is None:
            raise LmpressError("calibration needs a tokenizer; pass tokenizer=")
        _check_calibration_size(model, cc)
        ids = calibration_ids(tokenizer, calib, cc.n_samples, cc.seq_len, cc.seed)
    t0 = time.perf_counter()
    result = quantize_model(model, recipe, ids, batch_size=batch_size, progress=progress)
    result.seconds = time.perf_counter() - t0
    result.tokenizer = tokenizer
    result.metadata = {
        "recipe": recipe.to_dict(),
        "calibration": cc.to_dict() if ids is not None else None,
        "source_model": source,
        "quantize_seconds": round(result.seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "modules": {
            n: {"method": p.method, "method_args": p.method_args} for n, p in result.plans.items()
        },
        "layer_errors": {n: round(e, 6) for n, e in result.layer_errors.items()},
        "weight_errors": {n: round(e, 6) for n, e in result.weight_errors.items()},
        "transforms_chosen": result.transforms if recipe.transforms else None,
    }
    if result.model_transforms:
        result.metadata["model_transforms"] = result.model_transforms
    if result.input_scales:
        result.metadata["input_scales"] = {k: float(v) for k, v in result.input_scales.items()}
    return result


def _check_calibration_size(model: nn.Module, cc: CalibConfig) -> None:
    """Calibration samples fit the model's positions and, with the block activations
    the pipeline keeps for all of them, the memory available now."""
    from lmpress.models.checks import available_memory_bytes, max_positions

    config = getattr(model, "config", None)
    limit = max_positions(config)
    if limit is not None and cc.seq_len > limit:
        raise LmpressError(
            f"--calib-seq-len {cc.seq_len} exceeds the model's {limit} positions; "
            f"use {limit} or less"
        )
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    avail = available_memory_bytes()
    if not (isinstance(hidden, int) and avail):
        return
    # float32 block inputs and outputs, for every sample
    need = 2 * 4 * cc.n_samples * cc.seq_len * hidden
    if need > avail:
        raise LmpressError(
            f"--calib-samples {cc.n_samples} x --calib-seq-len {cc.seq_len} needs about "
            f"{need / 2**30:.1f} GiB of calibration activations, more than the "
            f"{avail / 2**30:.1f} GiB available; use fewer or shorter samples"
        )


def save(result: QuantizeResult, out_dir: "str | Path", overwrite: bool = False) -> Path:
    """Write a quantized model to ``out_dir`` (atomic)."""
    return save_checkpoint(
        result.model,
        result.tokenizer,
        out_dir,
        extra_config=result.metadata,
        overwrite=overwrite,
    )


def load(path: "str | Path", with_tokenizer: bool = False):
    """Load an lmpress checkpoint as a transformers model (and its tokenizer if asked)."""
    p = Path(path)
    if not p.exists():
        raise LmpressError(f"checkpoint {path} does not exist")
    model, tok = load_checkpoint(p, with_tokenizer=with_tokenizer)
    return (model, tok) if with_tokenizer else model


def evaluate(
    model: "str | nn.Module",
    tokenizer=None,
    text: str = "wikitext2",
    ctx: int = 2048,
    windows: int | None = 16,
    base: "str | None" = None,
    progress: bool = True,
    convention: str = "gptq",
) -> EvalResult:
    """Perplexity (and, with ``base``, KL and top-1 agreement) plus size figures.

    ``convention`` is ``"gptq"`` (the project's protocol), ``"llamacpp"``
    (llama-perplexity's: second half of each window scored; see
    :mod:`lmpress.eval.perplexity`) or ``"lm-eval"`` (lm-evaluation-harness's
    wikitext word/byte perplexity over whole articles, :mod:`lmpress.eval.rolling`;
    there ``ctx`` is the window, ``None`` for the model's positions, ``windows`` the
    number of articles, and ``base`` is not used). ``result.to_dict()`` is the
    ``lmpress eval --json`` object.
    """
    path = None
    if isinstance(model, str):
        loaded = load_model(model)
        model, tokenizer, path = loaded.model, loaded.tokenizer, loaded.source
    if tokenizer is None:
        raise LmpressError("evaluation needs the model's tokenizer")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos and ctx is not None and ctx > max_pos:
        raise LmpressError(f"--ctx {ctx} exceeds the model's {max_pos} positions; use <= {max_pos}")
    ppl: PerplexityResult | RollingPerplexityResult
    if convention == "lm-eval":
        source = resolve_text(text, purpose="eval")
        ppl = word_byte_perplexity(model, tokenizer, source, ctx, windows, progress)
        version = quantize_seconds = None  # lm-eval rows have never carried the run info
    else:
        ppl = _token_perplexity(model, tokenizer, text, ctx, windows, base, progress, convention)
        version, quantize_seconds = _lmpress_run_info(model, path)
    return EvalResult(
        perplexity=ppl,
        convention=convention,
        text=text,
        size=model_size_stats(model, path),
        peak_rss_mb=round(peak_rss_mb(), 1),
        quantize_seconds=quantize_seconds,
        lmpress_version=version,
    )


def _token_perplexity(
    model: nn.Module,
    tokenizer,
    text: str,
    ctx: int,
    windows: int | None,
    base: str | None,
    progress: bool,
    convention: str,
) -> PerplexityResult:
    """Token perplexity by ``convention``, against ``base``'s cached logits when given
    (filled first where the cache lacks windows)."""
    ids = eval_ids(tokenizer, text, convention, ctx)
    cache = None
    if base is not None:
        from lmpress.eval.perplexity import n_windows
        from lmpress.models.load import resolve_model_path

        cache = BaseLogitsCache(cache_key(resolve_model_path(base), ids, ctx))
        n = n_windows(ids, ctx, windows)
        if not cache.has(n):
            b = load_model(base)
            if not torch.equal(eval_ids(b.tokenizer, text, convention, ctx), ids):
                raise LmpressError(
                    "the base model's tokenizer differs from the model's; KL is undefined"
                )
            fill_base_cache(b.model, ids, ctx, n, cache, progress)
            del b
    return evaluate_perplexity(
        model, ids, ctx, windows, cache, progress, first_scored(convention, ctx)
    )


def _lmpress_run_info(model: nn.Module, path: str | None) -> tuple[str | None, float | None]:
    """``(lmpress version, quantize seconds)`` for an lmpress checkpoint, else ``(None,
    None)``; the seconds come from the checkpoint's run info, so only from a directory."""
    qc = getattr(model.config, "quantization_config", None)
    if not (isinstance(qc, dict) and qc.get("quant_method") == "lmpress"):
        return None, None
    seconds = None
    if path is not None and Path(path).is_dir():
        from lmpress.checkpoint import read_run_info

        seconds = read_run_info(path).get("quantize_seconds")
    return __version__, seconds


def evaluate_tasks(
    model: "str | nn.Module",
    tasks: "str | list[tuple[str, Path]]",
    tokenizer=None,
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, TaskResult]:
    """Zero-shot accuracies scored like lm-evaluation-harness (see :mod:`lmpress.eval.loglik`).

    ``tasks`` is ``"piqa,hellaswag"`` (``name=path`` for a file of one's own) or parsed
    pairs; returns a :class:`~lmpress.eval.loglik.TaskResult` per task: ``acc`` (and
    ``acc_norm`` where lm-eval has it, ``ppl`` for LAMBADA), their standard errors,
    ``n`` and the per-example ``predictions``.
    """
    from lmpress.eval.loglik import evaluate_task
    from lmpress.eval.tasks import TASKS, load_task, parse_task_list

    pairs = parse_task_list(tasks) if isinstance(tasks, str) else tasks
    if isinstance(model, str):
        loaded = load_model(model)
        model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise LmpressError("task evaluation needs the model's tokenizer")
    out: dict[str, TaskResult] = {}
    for name, path in pairs:
        spec = TASKS.get(name)
        examples = load_task(name, path, limit)
        out[name] = evaluate_task(
            model, tokenizer, examples, spec.metrics, spec.kind, batch_size, progress, name
        )
    return out


def export_model(
    path: "str | Path",
    to: str,
    out: "str | Path",
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Export the model at ``path`` (an lmpress checkpoint, or any model spec lmpress
    loads: float models export as float) to the format ``to`` (a name of
    :data:`lmpress.export.EXPORTERS`: ``gguf``, ``compressed-tensors``, ``gptq``) at
    ``out``; returns the exporter's summary.

    A single-file format (``gguf``) writes one file, the others a directory; either
    appears only when complete. ``options`` are the exporter's declared ones
    (``EXPORTERS.get(to).declared``, e.g. ``embed_type`` for gguf, ``scale_dtype`` for
    compressed-tensors); an unknown name or a wrong value fails before any work.
    """
    from lmpress.export import EXPORTERS, atomic_output
    from lmpress.outputs import check_output_path

    spec = EXPORTERS.get(to)
    opts = spec.options(options, to)
    # before the model load
    check_output_path(out, overwrite, spec.writes_directory, [path], spec.magic)
    loaded = load_model(str(path))  # an lmpress checkpoint, or any model lmpress loads
    p = Path(loaded.source)
    context = {
        "progress": progress,
        "tokenizer_dir": p if p.is_dir() else p.parent,
        "source_model": loaded.source,
    }
    with atomic_output(Path(out), overwrite, spec.writes_directory, [path], spec.magic) as tmp:
        summary = spec.fn(loaded.model, loaded.tokenizer, tmp, {**opts, **context})
    summary["path"] = str(out)
    summary["source"] = str(p)
    return summary
