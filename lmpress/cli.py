"""``lmpress quantize | eval | info | sweep | export | generate``.

Names a user picks from (methods, transforms, presets, tasks, export formats and
their options) are read from their registries when the parser is built, so that a
method or an exporter added in its own file appears here, in ``--help`` and in the
choices, without an edit to this file.
"""

import argparse
import contextlib
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpress.errors import LmpressError

if TYPE_CHECKING:
    from lmpress.eval.perplexity import PerplexityResult
    from lmpress.eval.result import EvalResult
    from lmpress.export import ExportOption


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _listed(names: list[str]) -> str:
    return ", ".join(names)


def _key_value(kv: str, flag: str, example: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(key, value)``, the value read as YAML (``true``, ``64``,
    ``0.1``, a string)."""
    import yaml

    key, sep, value = kv.partition("=")
    if not sep or not key.strip():
        raise LmpressError(f"{flag} {kv!r} must look like KEY=VALUE, e.g. {example}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise LmpressError(f"{flag} {kv!r}: cannot read the value; quote strings") from None


def _scheme_examples() -> list[str]:
    """Scheme names to show as examples: those of the presets, then the first spelling
    of every other format, each once."""
    from lmpress.formats import FORMATS
    from lmpress.presets import PRESETS

    schemes = [PRESETS.get(n).recipe.get("scheme") for n in PRESETS.names()]
    schemes += [FORMATS.get(n).spellings().split(",")[0] for n in FORMATS.names() if n != "int"]
    return list(dict.fromkeys(s for s in schemes if isinstance(s, str) and s))


def _methods_with(option: str) -> list[str]:
    """The methods that take ``option``."""
    from lmpress.methods import METHODS

    return [n for n in METHODS.names() if option in METHODS.get(n).defaults]


def _method_help() -> str:
    """``--method``'s help: the methods, and how transforms go before one."""
    from lmpress.methods import METHODS
    from lmpress.recipe import Recipe
    from lmpress.transforms import TRANSFORMS

    methods, transforms = METHODS.names(), TRANSFORMS.names()
    text = " | ".join(methods)
    if transforms:
        text += (
            f", optionally after transforms ({_listed(transforms)}) joined by '+', "
            f"e.g. {transforms[0]}+{methods[0]}"
        )
    return f"{text} (default {Recipe().method})"


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (lmpress's, transformers' and huggingface_hub's) and no "
        "transformers log messages below errors",
    )


def _check_writable_file(path: str | None, flag: str, inputs: list[str | None] = ()) -> None:
    """Fail before any work if ``path`` could not be written at the end: its folder is
    missing or not writable, it is a directory, or it is (or holds) an input."""
    if path is None:
        return
    from lmpress.outputs import check_not_an_input

    p = Path(path).expanduser()
    check_not_an_input(p, inputs, flag)
    if p.is_dir():
        raise LmpressError(f"{flag} {path} is a directory; give a file path")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise LmpressError(f"{flag} {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise LmpressError(f"{flag} {path}: cannot write there; choose another path")


def _local_inputs(a: argparse.Namespace, *names: str) -> list[str]:
    """The command's arguments ``names`` that are local paths (a model alias resolved)."""
    from lmpress.models.load import ALIASES

    out = []
    for n in names:
        v = getattr(a, n, None)
        if not isinstance(v, str):
            continue
        if v in ALIASES:
            try:
                v = str(ALIASES[v]())
            except LmpressError:
                continue
        if Path(v).expanduser().exists():
            out.append(v)
    return out


def _add_quantize(sub) -> None:
    from lmpress.methods import METHODS
    from lmpress.presets import PRESETS
    from lmpress.recipe import Recipe

    schemes = _scheme_examples()
    p = sub.add_parser("quantize", help="quantize a model and save it")
    p.add_argument("model", help="HF directory, .gguf file, hub id, or the alias smollm2-135m")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--method", default=None, help=_method_help())
    p.add_argument(
        "--preset",
        default=None,
        help=f"a named recipe: {_listed(PRESETS.names())} (see README)",
    )
    p.add_argument(
        "--scheme",
        default=None,
        help=f"e.g. {_listed(schemes)} (default {Recipe().scheme.name})",
    )
    p.add_argument("--recipe", default=None, help="YAML recipe file (flags given here override it)")
    p.add_argument(
        "--bits",
        type=_positive_float,
        default=None,
        metavar="B",
        help="allocate: choose a scheme per module so that the quantized modules average at "
        "most B bits per weight (everything stored counted), least predicted loss first",
    )
    p.add_argument(
        "--candidates",
        default=None,
        metavar="S1,S2,...",
        help="--bits: the schemes a module may get (default: integer 2-8 bit groups, "
        "see docs/budget.md)",
    )
    p.add_argument(
        "--alloc-samples",
        type=_positive_int,
        default=32,
        help="--bits: calibration samples of the sensitivity pass (the first of --calib's)",
    )
    p.add_argument(
        "--search",
        choices=["knapsack", "evopress"],
        default="knapsack",
        help="--bits: solve on the predicted costs (knapsack, default), or refine that "
        "answer by evolutionary search on measured KL (evopress)",
    )
    p.add_argument(
        "--generations",
        type=_positive_int,
        default=40,
        help="--search evopress: generations of the search",
    )
    p.add_argument(
        "--save-recipe",
        default=None,
        metavar="FILE",
        help="--bits: also write the allocated recipe here (YAML, reusable with --recipe)",
    )
    p.add_argument(
        "--kv-cache",
        default=None,
        metavar="KV",
        help="quantize keys and values: kv8, kv4, kv4h (Hadamard-rotated keys), kvfp8",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="REGEX=SCHEME|skip",
        help=f"per-module scheme by regex, e.g. 'down_proj={schemes[-1]}' or 'lm_head=skip' "
        "(repeatable)",
    )
    p.add_argument(
        "--calib", default="wikitext2", help="calibration text: wikitext2 or a file path"
    )
    p.add_argument("--calib-samples", type=_positive_int, default=128)
    p.add_argument("--calib-seq-len", type=_positive_int, default=512)
    p.add_argument("--seed", type=int, default=0)
    damped = _methods_with("damp")
    p.add_argument(
        "--damp",
        type=float,
        default=None,
        help=f"Hessian damping of {_listed(damped)} "
        f"(default {METHODS.get(damped[0]).defaults['damp'] if damped else '-'})",
    )
    p.add_argument(
        "--no-act-order",
        action="store_true",
        help=f"{_listed(_methods_with('act_order'))}: natural column order",
    )
    p.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, e.g. mse=true or block_size=64 (repeatable)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=8, help="calibration samples per forward"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--json", default=None, help="also write a summary JSON here")
    _add_quiet(p)


def _add_eval(sub) -> None:
    from lmpress.eval.perplexity import CONVENTIONS
    from lmpress.eval.rolling import RollingPerplexityResult
    from lmpress.eval.tasks import TASKS

    p = sub.add_parser("eval", help="perplexity, KL and top-1 agreement against a base model")
    p.add_argument("model", help="lmpress checkpoint, HF directory, .gguf, or alias")
    p.add_argument(
        "--ppl",
        default=None,
        help="wikitext2, ptb, or a text file (default wikitext2 unless --tasks is given)",
    )
    p.add_argument(
        "--tasks",
        default=None,
        help=f"zero-shot tasks, lm-eval style: {','.join(TASKS.names())} "
        "(NAME=PATH for your own file)",
    )
    p.add_argument("--limit", type=_positive_int, default=None, help="first N examples per task")
    p.add_argument(
        "--batch-size", type=_positive_int, default=16, help="sequences per forward (tasks)"
    )
    p.add_argument(
        "--ctx", type=_positive_int, default=None, help="window (default 2048; 512 for llamacpp)"
    )
    p.add_argument(
        "--ppl-convention",
        choices=[*CONVENTIONS, RollingPerplexityResult.convention],
        default=CONVENTIONS[0],
        help="gptq: whole windows, rows joined by blank lines (default); llamacpp: "
        "llama-perplexity's (raw file, BOS per window, second half scored); lm-eval: "
        "lm-evaluation-harness's wikitext word/byte perplexity over whole articles "
        "(--ctx defaults to the model's positions, --windows counts articles)",
    )
    p.add_argument(
        "--windows",
        type=_non_negative_int,
        default=None,
        help="number of windows, 0 = all (default 16; for lm-eval: all articles)",
    )
    p.add_argument("--base", default=None, help="base model for KL / top-1 (e.g. smollm2-135m)")
    p.add_argument("--json", default=None, help="write results JSON here")
    _add_quiet(p)


def _add_sweep(sub) -> None:
    from lmpress.eval.tasks import TASKS

    p = sub.add_parser("sweep", help="quantize and evaluate a grid of methods x schemes")
    p.add_argument("model", help="HF directory, .gguf file, hub id, or the alias smollm2-135m")
    p.add_argument("-o", "--output", required=True, help="folder for results.jsonl and report")
    p.add_argument("--schemes", required=True, help=f"e.g. {','.join(_scheme_examples())}")
    p.add_argument(
        "--methods",
        required=True,
        help="comma list of METHOD[:KEY=VALUE,...] labels; methods as for quantize --method: "
        + _method_help(),
    )
    p.add_argument("--calib", default="wikitext2")
    p.add_argument("--calib-samples", type=_positive_int, default=128)
    p.add_argument("--calib-seq-len", type=_positive_int, default=512)
    p.add_argument("--ppl", default="wikitext2", help="evaluation text")
    p.add_argument("--ctx", type=_positive_int, default=2048)
    p.add_argument("--windows", type=_non_negative_int, default=16, help="0 = all")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each cell's checkpoint")
    p.add_argument(
        "--tasks",
        default=None,
        help=f"also score zero-shot tasks (comma list of {','.join(TASKS.names())})",
    )
    p.add_argument("--limit", type=_positive_int, default=None, help="first N examples per task")
    p.add_argument(
        "--no-speed",
        action="store_true",
        help="skip the per-cell prefill/decode tokens/s and peak-RSS measurement",
    )
    p.add_argument(
        "--anchors",
        default=None,
        help="JSON list of {label, bits_per_weight, ppl} points (other tools on the same "
        "model and protocol) to draw in the report's plot",
    )
    _add_quiet(p)


def cmd_sweep(a) -> int:
    # Method labels hold commas inside their options (gptq:damp=0.1,mse=false) only after
    # a colon; split the list on commas that start a new label.
    from lmpress.report.pareto import read_anchors
    from lmpress.sweep import run_sweep

    methods = _split_labels(a.methods)
    anchors = read_anchors(a.anchors) if a.anchors else ()
    rows = run_sweep(
        a.model,
        [s for s in a.schemes.split(",") if s],
        methods,
        a.output,
        calib=a.calib,
        calib_samples=a.calib_samples,
        calib_seq_len=a.calib_seq_len,
        text=a.ppl,
        ctx=a.ctx,
        windows=a.windows or None,
        keep_checkpoints=a.keep_checkpoints,
        progress=not a.quiet,
        tasks=a.tasks,
        limit=a.limit,
        speed=not a.no_speed,
        command="lmpress " + shlex.join(a.argv),
        anchors=anchors,
    )
    print(f"{len(rows)} rows in {Path(a.output) / 'results.jsonl'}; report {a.output}/report.md")
    return 0


def _split_labels(text: str) -> list[str]:
    """``"rtn,gptq:damp=0.1,mse=false,hqq"`` -> ``["rtn", "gptq:damp=0.1,mse=false", "hqq"]``."""
    out: list[str] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if out and ":" in out[-1] and "=" in part and ":" not in part:
            out[-1] += "," + part  # another option of the previous label
        else:
            out.append(part)
    return out


def _add_export(sub) -> None:
    from lmpress.export import EXPORTERS

    formats = EXPORTERS.names()
    p = sub.add_parser(
        "export", help=f"write a checkpoint in another ecosystem's format: {_listed(formats)}"
    )
    p.add_argument("path", help="an lmpress checkpoint directory")
    p.add_argument(
        "--to",
        required=True,
        choices=formats,
        help="; ".join(f"{n}: {EXPORTERS.get(n).description}" for n in formats),
    )
    files = [n for n in formats if not EXPORTERS.get(n).writes_directory]
    p.add_argument(
        "-o", "--output", required=True, help=f"output file ({_listed(files)}) or directory"
    )
    p.add_argument("--overwrite", action="store_true")
    _add_export_option_flags(p)
    p.add_argument(
        "--export-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the --to format by its declared name (repeatable; the flags "
        "above are the same options)",
    )
    p.add_argument("--json", default=None, help="write the export summary here")
    _add_quiet(p)


def _export_option_dest(name: str) -> str:
    return f"export_option_{name}"


def _flag_type(default: Any) -> Callable[[str], Any]:
    """How a generated flag reads its text: as the type of the option's default."""
    if isinstance(default, bool):
        return _bool
    return type(default) if isinstance(default, int | float) else str


def _bool(text: str) -> bool:
    import yaml

    value = yaml.safe_load(text)
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return value


def _add_export_option_flags(p: argparse.ArgumentParser) -> None:
    """One flag per option the exporters declare (``embed_type`` -> ``--embed-type``),
    its choices and help those of every exporter that declares it."""
    from lmpress.export import EXPORTERS

    owners: dict[str, list[tuple[str, ExportOption]]] = {}
    for fmt in EXPORTERS.names():
        for name, opt in EXPORTERS.get(fmt).declared.items():
            owners.setdefault(name, []).append((fmt, opt))
    for name, decls in owners.items():
        choices = [c for _, o in decls for c in (o.choices or ())]
        helps = "; ".join(f"{fmt}: {o.help} (default {o.default})" for fmt, o in decls)
        try:
            p.add_argument(
                "--" + name.replace("_", "-"),
                dest=_export_option_dest(name),
                default=None,  # None: not given, so the exporter's own default applies
                choices=list(dict.fromkeys(choices)) or None,
                type=_flag_type(decls[0][1].default),
                help=helps,
            )
        except argparse.ArgumentError:
            continue  # the name is a flag of the command already: --export-arg reaches it


def _export_options(a: argparse.Namespace) -> dict[str, Any]:
    """The exporter options given as flags or ``--export-arg`` (checked by the exporter)."""
    from lmpress.export import EXPORTERS

    opts: dict[str, Any] = {}
    examples = []
    for fmt in EXPORTERS.names():
        for name, opt in EXPORTERS.get(fmt).declared.items():
            examples.append(f"{name}={opt.default}")
            value = getattr(a, _export_option_dest(name), None)
            if value is not None:
                opts[name] = value
    for kv in a.export_arg:
        key, value = _key_value(kv, "--export-arg", examples[0] if examples else "KEY=VALUE")
        opts[key] = value
    return opts


def cmd_export(a) -> int:
    import lmpress

    _check_writable_file(a.json, "--json", [a.path, a.output])
    s = lmpress.export_model(
        a.path, a.to, a.output, overwrite=a.overwrite, progress=not a.quiet, **_export_options(a)
    )
    line = f"wrote {s['path']} ({s['format']}, {s['quantized_modules']} quantized modules"
    if "tensor_types" in s:
        types = ", ".join(f"{k} x{v}" for k, v in s["tensor_types"].items())
        line += f": {types}; {s['exact_grid_modules']} on their exact grid, max |error| "
        line += f"{s['max_abs_error_quantized']:.3g}"
    print(line + ")")
    _write_json(a.json, s, f"{a.output} is written")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text with a (compressed) model")
    p.add_argument("path", help="an lmpress checkpoint, HF directory, .gguf, or smollm2-135m")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=_positive_int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=_non_negative_int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "lmpress", "transformers"],
        help="lmpress: lean decoder on the C kernels; transformers: the model's own forward",
    )
    p.add_argument("--threads", type=_positive_int, default=None, help="default: every core")
    p.add_argument("--no-stream", action="store_true", help="print the text at the end only")
    p.add_argument("--json", default=None, help="write text, tokens and timings here")
    _add_quiet(p)


def cmd_generate(a) -> int:
    import torch

    from lmpress.models.checks import check_threads
    from lmpress.runtime import generate

    _check_writable_file(a.json, "--json", _local_inputs(a, "path"))
    if a.temperature < 0 or not 0 < a.top_p <= 1:
        raise LmpressError("--temperature must be >= 0 and --top-p in (0, 1]")
    if a.threads:
        torch.set_num_threads(check_threads(a.threads))
    held: list[str] = []

    def out(text: str) -> None:
        if a.no_stream:
            held.append(text)
        else:
            print(text, end="", flush=True)

    try:
        r = generate(
            a.path,
            a.prompt,
            a.max_new_tokens,
            temperature=a.temperature,
            top_k=a.top_k,
            top_p=a.top_p,
            seed=a.seed,
            engine=a.engine,
            on_text=out,
        )
    except BaseException:
        if held:  # what was generated before the failure is not lost
            print("".join(held), flush=True)
        raise
    if a.no_stream:
        print(r.text, end="")
    print(
        f"\n[{r.engine}] prompt {r.prompt_tokens} tokens in {r.prefill_s:.3f} s; "
        f"{len(r.ids)} new tokens, decode {r.decode_tokens_per_s:.1f} tokens/s",
        file=sys.stderr,
    )
    record = {
        "text": r.text,
        "ids": r.ids,
        "engine": r.engine,
        "prompt_tokens": r.prompt_tokens,
        "prefill_s": r.prefill_s,
        "decode_s": r.decode_s,
        "decode_tokens_per_s": r.decode_tokens_per_s,
    }
    _write_json(a.json, record, "the text is printed above")
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="schemes per module, bits per weight, size on disk")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_quiet(p)


def _recipe_from_args(a):
    from lmpress.recipe import Recipe

    d = {}
    if a.recipe and a.preset:
        raise LmpressError("give --recipe or --preset, not both")
    if a.recipe:
        d = Recipe.from_yaml(a.recipe).to_dict()
        d["overrides"] = [{k: v for k, v in o.items() if v is not None} for o in d["overrides"]]
    if a.preset:
        from lmpress.presets import preset_recipe

        d = preset_recipe(a.preset)
    base_label = Recipe.from_dict(d).label if d else None
    if a.method:
        d["method"] = a.method
        d.pop("transforms", None)
    if a.scheme:
        d["scheme"] = a.scheme
    if getattr(a, "kv_cache", None):
        d["kv_cache"] = a.kv_cache
    args = dict(d.get("method_args") or {})
    if a.method and base_label and Recipe.from_dict(d).label != base_label:
        args = {}
    if a.damp is not None:
        args["damp"] = a.damp
    if a.no_act_order:
        args["act_order"] = False
    for kv in a.method_arg:
        key, value = _key_value(kv, "--method-arg", "mse=true")
        args[key] = value
    d["method_args"] = args
    for o in a.override:
        if "=" not in o:
            raise LmpressError(f"--override {o!r} must look like REGEX=SCHEME or REGEX=skip")
        pat, val = o.rsplit("=", 1)
        d.setdefault("overrides", []).append(
            {"pattern": pat, "skip": True} if val == "skip" else {"pattern": pat, "scheme": val}
        )
    return Recipe.from_dict(d)


def cmd_quantize(a) -> int:
    import lmpress
    from lmpress.calibration import CalibConfig

    out = Path(a.output)
    from lmpress.outputs import check_output_path

    inputs = _local_inputs(a, "model", "recipe", "calib")
    check_output_path(out, a.overwrite, is_dir=True, inputs=inputs)  # before any long work
    _check_writable_file(a.json, "--json", [*inputs, str(out)])
    _check_writable_file(a.save_recipe, "--save-recipe", [*inputs, str(out)])
    alloc_flags = a.candidates or a.save_recipe or a.search != "knapsack"
    if (alloc_flags or a.generations != 40 or a.alloc_samples != 32) and a.bits is None:
        raise LmpressError(
            "--candidates, --search, --generations, --alloc-samples and --save-recipe go "
            "with --bits (the allocator)"
        )
    if a.bits is not None and a.scheme:
        raise LmpressError("give --bits (the allocator picks the schemes) or --scheme, not both")
    recipe = _recipe_from_args(a)
    cc = CalibConfig(a.calib, a.calib_samples, a.calib_seq_len, a.seed)
    model, tokenizer, allocation, source = a.model, None, None, None
    if a.bits is not None:
        model, tokenizer, source, allocation = _allocate(a, recipe, cc)
        recipe = allocation.recipe
    res = lmpress.quantize(
        model,
        recipe,
        calib=a.calib,
        tokenizer=tokenizer,
        calib_config=cc,
        batch_size=a.batch_size,
        progress=not a.quiet,
    )
    if allocation is not None:
        res.metadata["allocation"] = allocation.to_dict()
        res.metadata["source_model"] = source
    lmpress.save(res, out, overwrite=a.overwrite)
    from lmpress.api import peak_rss_mb
    from lmpress.eval.size import model_size_stats

    stats = model_size_stats(res.model, out)
    summary = {
        "output": str(out),
        "method": recipe.label,
        "scheme": recipe.scheme.name,
        "quantize_seconds": res.metadata["quantize_seconds"],
        "peak_rss_mb": round(peak_rss_mb(), 1),  # after saving: the whole command
        **stats.to_dict(),
    }
    if allocation is not None:
        summary["allocation_seconds"] = round(allocation.seconds, 3)
    print(
        f"saved {out}: {stats.quantized_modules} modules, "
        f"{stats.bits_per_weight:.3f} bits/weight (quantized), "
        f"{stats.bits_per_weight_model:.3f} (whole model), {stats.size_bytes / 1e6:.1f} MB, "
        f"{summary['quantize_seconds']:.1f} s, peak RSS {summary['peak_rss_mb']:.0f} MiB"
    )
    _write_json(a.json, summary, f"the checkpoint {out} is saved")
    return 0


def _allocate(a, recipe, cc):
    """``quantize --bits``: load the model, run the allocator, print its choice; returns
    the model, its tokenizer and source, and the allocation."""
    from collections import Counter

    import yaml

    from lmpress.budget import DEFAULT_CANDIDATES, allocate
    from lmpress.calibration import calibration_ids
    from lmpress.models.load import load_model

    loaded = load_model(a.model)
    n = min(a.alloc_samples, cc.n_samples)
    ids = calibration_ids(loaded.tokenizer, a.calib, cc.n_samples, cc.seq_len, cc.seed)[:n]
    cands = [c for c in (a.candidates or "").split(",") if c] or list(DEFAULT_CANDIDATES)
    alloc = allocate(
        loaded.model,
        recipe,
        ids,
        a.bits,
        cands,
        batch_size=min(a.batch_size, 2),
        search=a.search,
        generations=a.generations,
        progress=not a.quiet,
    )
    counts = Counter(alloc.choice.values())
    print(
        f"allocated {len(alloc.choice)} modules to {alloc.bits_per_weight:.3f} bits/weight "
        f"(budget {a.bits:g}; predicted loss +{alloc.predicted_loss:.4f} nats/token, "
        f"{alloc.search}, {alloc.seconds:.0f} s): "
        + ", ".join(f"{s} x{c}" for s, c in sorted(counts.items(), key=lambda t: -t[1]))
    )
    if a.save_recipe:
        Path(a.save_recipe).write_text(yaml.safe_dump(_plain_recipe(alloc.recipe), sort_keys=False))
    return loaded.model, loaded.tokenizer, loaded.source, alloc


def _plain_recipe(recipe) -> dict[str, Any]:
    """A recipe as the YAML a user writes: schemes by name, empty keys left out."""
    d = recipe.to_dict()
    d["scheme"] = recipe.scheme.name
    d["overrides"] = [
        {k: v for k, v in {**o, "scheme": ov.scheme.name if ov.scheme else None}.items() if v}
        for o, ov in zip(d["overrides"], recipe.overrides, strict=True)
    ]
    return {k: v for k, v in d.items() if v not in ({}, [], None)}


def _write_json(path: str | None, obj: Any, done: str) -> None:
    """Write ``obj`` to ``path``; on failure say what was already done."""
    if not path:
        return
    try:
        Path(path).write_text(json.dumps(obj, indent=2))
    except OSError as e:
        raise LmpressError(f"{done}, but --json {path} could not be written: {e.strerror}") from e


def cmd_eval(a) -> int:
    from dataclasses import replace

    import lmpress
    from lmpress.eval.result import EvalResult

    _check_writable_file(a.json, "--json", _local_inputs(a, "model", "ppl", "base"))
    res = EvalResult()
    tasks = None
    if a.tasks:
        from lmpress.eval.tasks import parse_task_list

        tasks = parse_task_list(a.tasks)  # before loading anything: typos fail fast
    if a.ppl or not a.tasks:
        lm_eval_style = a.ppl_convention == "lm-eval"
        if lm_eval_style and a.base:
            raise LmpressError("--base (KL) is not defined for --ppl-convention lm-eval")
        ctx = a.ctx or {"llamacpp": 512, "lm-eval": None}.get(a.ppl_convention, 2048)
        windows = a.windows if a.windows is not None else (0 if lm_eval_style else 16)
        res = lmpress.evaluate(
            a.model,
            text=a.ppl or "wikitext2",
            ctx=ctx,
            windows=windows or None,
            base=a.base,
            progress=not a.quiet,
            convention=a.ppl_convention,
        )
        print(_perplexity_line(res))
    if tasks:
        scores = lmpress.evaluate_tasks(
            a.model, tasks, limit=a.limit, batch_size=a.batch_size, progress=not a.quiet
        )
        res = replace(res, tasks=scores)
        for name, r in scores.items():
            parts = [f"{m}={v:.4f}±{se:.4f}" for m, (v, se) in r.scores().items()]
            print(f"{name}: {' '.join(parts)} (n={r.n})")
    _write_json(a.json, res.to_dict(), "the evaluation ran")
    p = res.perplexity
    figures = [getattr(p, k, None) for k in ("ppl", "word_perplexity")] if p else []
    if any(isinstance(v, float) and not math.isfinite(v) for v in figures):
        raise LmpressError(f"the perplexity of {a.model} is not finite; the model is broken")
    return 0


def _perplexity_line(res: "EvalResult") -> str:
    """One line of ``lmpress eval``'s perplexity figures (and agreement with the base)."""
    from lmpress.eval.rolling import RollingPerplexityResult

    p = res.perplexity
    if isinstance(p, RollingPerplexityResult):
        line = (
            f"word_perplexity={p.word_perplexity:.4f} "
            f"byte_perplexity={p.byte_perplexity:.5f} "
            f"bits_per_byte={p.bits_per_byte:.5f} ({res.text}, {p.convention} convention, "
            f"max_length={p.max_length}, documents={p.documents})"
        )
    else:
        line = (
            f"ppl={p.ppl:.4f} ({res.text}, {res.convention} convention, "
            f"ctx={p.ctx}, windows={p.windows})"
        )
        if p.agreement is not None and p.ratio is not None:
            line += _agreement_text(p)
    if res.size is not None and res.size.bits_per_weight:
        line += f" bits/weight={res.size.bits_per_weight:.3f}"
    return line


def _agreement_text(p: "PerplexityResult") -> str:
    """KL, top-1, delta-p and the paired perplexity ratio of a result against its base."""
    g, r = p.agreement, p.ratio
    text = (
        f" kl={g.kl_mean:.5f}±{g.kl_stderr:.5f} "
        f"(median {g.kl_median:.5f}, p99 {g.kl_p99:.4f}, "
        f"p99.9 {g.kl_p999:.4f}) top1={g.top1_agreement:.4f} "
        f"dp={g.delta_p_mean:+.5f} ln(ppl/base)={r.ln_ppl_ratio:+.5f}"
    )
    if p.windows > 1:
        text += f"±{r.ln_ppl_ratio_stderr_windows:.5f} (stderr over windows)"
    return text


def cmd_info(a) -> int:
    from lmpress.checkpoint import read_quant_config, read_run_info

    p = Path(a.path)
    if not p.exists():
        raise LmpressError(f"{p} does not exist")
    qc = read_quant_config(p)
    import lmpress
    from lmpress.eval.size import model_size_stats

    model = lmpress.load(p)
    stats = model_size_stats(model, p)
    schemes: dict[str, int] = {}
    for spec in qc["modules"].values():
        from lmpress.formats.scheme import Scheme

        name = Scheme.from_dict(spec["scheme"]).name
        schemes[name] = schemes.get(name, 0) + 1
    info = {
        "path": str(p),
        "method": "+".join(
            [t["name"] for t in (qc.get("recipe") or {}).get("transforms") or []]
            + [(qc.get("recipe") or {}).get("method", "?")]
        ),
        "schemes": schemes,
        "modules": {n: Scheme.from_dict(s["scheme"]).name for n, s in qc["modules"].items()},
        "calibration": qc.get("calibration"),
        "source_model": qc.get("source_model"),
        # older checkpoints kept the timing in config.json
        "quantize_seconds": read_run_info(p).get("quantize_seconds", qc.get("quantize_seconds")),
        "lmpress_version": qc.get("lmpress_version"),
        **stats.to_dict(),
    }
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{p}  (lmpress {info['lmpress_version']}, method {info['method']})")
    print(f"  source: {info['source_model']}")
    print(f"  schemes: {', '.join(f'{k} x{v}' for k, v in schemes.items())}")
    print(
        f"  bits/weight: {stats.bits_per_weight:.3f} (quantized modules), "
        f"{stats.bits_per_weight_model:.3f} (whole model)"
    )
    print(f"  size on disk: {stats.size_bytes / 1e6:.2f} MB")
    return 0


@contextlib.contextmanager
def _progress_bars(shown: bool) -> Iterator[None]:
    """With ``shown`` false (``--quiet``), no progress bar for the command's length.

    lmpress's own bars follow the ``progress`` argument every command passes down;
    these are the libraries' (transformers' weight loading and GGUF dequantization,
    huggingface_hub's downloads) and transformers' log messages below errors. The
    previous state comes back afterwards, because :func:`main` also runs inside other
    programs (the tests).
    """
    if shown:
        yield
        return
    from huggingface_hub import utils as hub
    from transformers.utils import logging as tf_logging

    hub_bars_were_off = hub.are_progress_bars_disabled()
    bars_were_on, verbosity = tf_logging.is_progress_bar_enabled(), tf_logging.get_verbosity()
    tf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    tf_logging.set_verbosity_error()
    try:
        with _gguf_loader_bars_follow_transformers():
            yield
    finally:
        tf_logging.set_verbosity(verbosity)
        if bars_were_on:
            tf_logging.enable_progress_bar()  # which turns huggingface_hub's on as well
        (hub.disable_progress_bars if hub_bars_were_off else hub.enable_progress_bars)()


@contextlib.contextmanager
def _gguf_loader_bars_follow_transformers() -> Iterator[None]:
    """transformers' GGUF loader draws its "de-quantizing" bar with tqdm itself, past
    transformers' own progress switch; for the block, it draws through transformers'
    tqdm, which follows that switch."""
    try:
        from transformers import modeling_gguf_pytorch_utils as loader
        from transformers.utils.logging import tqdm as switched_tqdm
    except ImportError:  # no gguf support installed: no such bar either
        yield
        return
    own = getattr(loader, "tqdm", None)
    if own is None:
        yield
        return
    loader.tqdm = switched_tqdm
    try:
        yield
    finally:
        loader.tqdm = own


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that outputs being written are removed
    (an interruption like Ctrl-C, with its own exit status)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0, 2 for a user error, 1 for an
    internal one, 130 on Ctrl-C and 143 on SIGTERM (outputs being written are removed)."""
    import signal
    import threading

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return _main(argv)
    except Terminated:
        print("lmpress: terminated; no partial output was left", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("lmpress: interrupted; no partial output was left", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while torch and transformers import, and raise them
    after: an interrupt inside torch's native initialisation cannot unwind (the
    process aborts, or a half-imported torch fails at exit)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _frame: got.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if got:
        raise Terminated if got[0] == signal.SIGTERM else KeyboardInterrupt


def _main(argv: list[str] | None) -> int:
    with _signals_held():
        import torch  # noqa: F401
        import transformers  # noqa: F401

        # these pull in transformers' lazily imported submodules; a Ctrl-C landing in
        # one of those imports was lost (the run went on to the end)
        import lmpress.methods  # noqa: F401
        import lmpress.models.load  # noqa: F401
        import lmpress.transforms  # noqa: F401
    parser = argparse.ArgumentParser(prog="lmpress", description=__doc__)
    from lmpress.__version__ import __version__

    parser.add_argument("--version", action="version", version=f"lmpress {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_quantize(sub)
    _add_eval(sub)
    _add_info(sub)
    _add_sweep(sub)
    _add_export(sub)
    _add_generate(sub)
    a = parser.parse_args(argv)
    a.argv = list(map(str, sys.argv[1:] if argv is None else argv))
    try:
        cmds = {
            "quantize": cmd_quantize,
            "eval": cmd_eval,
            "info": cmd_info,
            "sweep": cmd_sweep,
            "export": cmd_export,
            "generate": cmd_generate,
        }
        # the library leaves torch's threads to its caller; the command uses every core
        from lmpress.models.load import set_threads

        set_threads()
        with _progress_bars(shown=not getattr(a, "quiet", False)):
            return cmds[a.cmd](a)
    except LmpressError as e:
        print(f"lmpress: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (the edge: one line, not a traceback)
        if os.environ.get("LMPRESS_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(
            f"lmpress: error: unexpected {type(e).__name__}: {first} "
            "(set LMPRESS_DEBUG=1 for the traceback; please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
