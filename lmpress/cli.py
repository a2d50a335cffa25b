"""``lmpress quantize | eval | info``."""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import yaml

from lmpress.errors import LmpressError


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _check_writable_file(path: str | None, flag: str) -> None:
    """Fail before any work if ``path``'s folder is missing (we would fail only at the end)."""
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise LmpressError(f"{flag} {path}: folder {parent} does not exist; create it first")


def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model and save it")
    p.add_argument("model", help="HF directory, .gguf file, hub id, or the alias smollm2-135m")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument(
        "--method",
        default=None,
        help="rtn | gptq | leanquant | hqq | learned-round, optionally after transforms: "
        "awq+gptq, awq+rtn (default rtn)",
    )
    p.add_argument(
        "--preset",
        default=None,
        help="a named recipe: fast, best-4bit, best-3bit, best-2bit (see README)",
    )
    p.add_argument("--scheme", default=None, help="e.g. w4g128, w8, w3g64s (default w4g128)")
    p.add_argument("--recipe", default=None, help="YAML recipe file (flags given here override it)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="REGEX=SCHEME|skip",
        help="per-module scheme by regex, e.g. 'down_proj=w8' or 'lm_head=skip' (repeatable)",
    )
    p.add_argument(
        "--calib", default="wikitext2", help="calibration text: wikitext2 or a file path"
    )
    p.add_argument("--calib-samples", type=_positive_int, default=128)
    p.add_argument("--calib-seq-len", type=_positive_int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--damp", type=float, default=None, help="GPTQ Hessian damping (default 0.01)")
    p.add_argument("--no-act-order", action="store_true", help="GPTQ: natural column order")
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_eval(sub) -> None:
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
        help="zero-shot tasks, lm-eval style: hellaswag,piqa,arc_easy,arc_challenge,"
        "winogrande,boolq,lambada_openai (NAME=PATH for your own file)",
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
        choices=["gptq", "llamacpp", "lm-eval"],
        default="gptq",
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
    p.add_argument("--quiet", action="store_true")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="quantize and evaluate a grid of methods x schemes")
    p.add_argument("model", help="HF directory, .gguf file, hub id, or the alias smollm2-135m")
    p.add_argument("-o", "--output", required=True, help="folder for results.jsonl and report")
    p.add_argument("--schemes", required=True, help="e.g. w4g128,w3g128,w2g64")
    p.add_argument(
        "--methods", required=True, help="e.g. rtn,gptq,awq+gptq,rtn:imatrix=true (comma list)"
    )
    p.add_argument("--calib", default="wikitext2")
    p.add_argument("--calib-samples", type=_positive_int, default=128)
    p.add_argument("--calib-seq-len", type=_positive_int, default=512)
    p.add_argument("--ppl", default="wikitext2", help="evaluation text")
    p.add_argument("--ctx", type=_positive_int, default=2048)
    p.add_argument("--windows", type=_non_negative_int, default=16, help="0 = all")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each cell's checkpoint")
    p.add_argument("--tasks", default=None, help="also score zero-shot tasks, e.g. piqa,arc_easy")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N examples per task")
    p.add_argument(
        "--no-speed",
        action="store_true",
        help="skip the per-cell prefill/decode tokens/s and peak-RSS measurement",
    )
    p.add_argument("--quiet", action="store_true")


def cmd_sweep(a) -> int:
    from lmpress.sweep import run_sweep

    # Method labels hold commas inside their options (gptq:damp=0.1,mse=false) only after
    # a colon; split the list on commas that start a new label.
    methods = _split_labels(a.methods)
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
    p = sub.add_parser("export", help="write a checkpoint as GGUF, compressed-tensors or GPTQ")
    p.add_argument("path", help="an lmpress checkpoint directory")
    p.add_argument("--to", required=True, choices=["gguf", "compressed-tensors", "gptq"])
    p.add_argument("-o", "--output", required=True, help="output file (gguf) or directory")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--embed-type",
        default="q8_0",
        choices=["q8_0", "f16", "f32"],
        help="gguf: type of the token embedding / output head (default q8_0)",
    )
    p.add_argument(
        "--fallback-type",
        default="q8_0",
        choices=["q8_0", "q4_1", "q4_0", "f16"],
        help="gguf: type for modules whose grid no ggml type holds (re-quantized)",
    )
    p.add_argument(
        "--scale-dtype",
        default="native",
        choices=["native", "float32"],
        help="compressed-tensors: scales as stored (fp16/bf16) or float32 (bit-exact float32)",
    )
    p.add_argument("--json", default=None, help="write the export summary here")
    p.add_argument("--quiet", action="store_true")


def cmd_export(a) -> int:
    import lmpress

    _check_writable_file(a.json, "--json")
    opts = {"embed_type": a.embed_type, "fallback_type": a.fallback_type}
    if a.to != "gguf":
        opts = {"scale_dtype": a.scale_dtype} if a.to == "compressed-tensors" else {}
    s = lmpress.export_model(
        a.path, a.to, a.output, overwrite=a.overwrite, progress=not a.quiet, **opts
    )
    line = f"wrote {s['path']} ({s['format']}, {s['quantized_modules']} quantized modules"
    if "tensor_types" in s:
        types = ", ".join(f"{k} x{v}" for k, v in s["tensor_types"].items())
        line += f": {types}; {s['exact_grid_modules']} on their exact grid, max |error| "
        line += f"{s['max_abs_error_quantized']:.3g}"
    print(line + ")")
    if a.json:
        Path(a.json).write_text(json.dumps(s, indent=2))
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


def cmd_generate(a) -> int:
    import torch

    from lmpress.generate import generate
    from lmpress.models.load import set_threads

    _check_writable_file(a.json, "--json")
    if a.temperature < 0 or not 0 < a.top_p <= 1:
        raise LmpressError("--temperature must be >= 0 and --top-p in (0, 1]")
    set_threads()
    if a.threads:
        torch.set_num_threads(a.threads)

    def out(text: str) -> None:
        print(text, end="", flush=True)

    r = generate(
        a.path,
        a.prompt,
        a.max_new_tokens,
        temperature=a.temperature,
        top_k=a.top_k,
        top_p=a.top_p,
        seed=a.seed,
        engine=a.engine,
        on_text=None if a.no_stream else out,
    )
    if a.no_stream:
        print(r.text, end="")
    print(
        f"\n[{r.engine}] prompt {r.prompt_tokens} tokens in {r.prefill_s:.3f} s; "
        f"{len(r.ids)} new tokens, decode {r.decode_tokens_per_s:.1f} tokens/s",
        file=sys.stderr,
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "text": r.text,
                    "ids": r.ids,
                    "engine": r.engine,
                    "prompt_tokens": r.prompt_tokens,
                    "prefill_s": r.prefill_s,
                    "decode_s": r.decode_s,
                    "decode_tokens_per_s": r.decode_tokens_per_s,
                },
                indent=2,
            )
        )
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="schemes per module, bits per weight, size on disk")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")


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
    args = dict(d.get("method_args") or {})
    if a.method and base_label and Recipe.from_dict(d).label != base_label:
        args = {}
    if a.damp is not None:
        args["damp"] = a.damp
    if a.no_act_order:
        args["act_order"] = False
    for kv in a.method_arg:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise LmpressError(f"--method-arg {kv!r} must look like KEY=VALUE, e.g. mse=true")
        try:
            args[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise LmpressError(
                f"--method-arg {kv!r}: cannot read the value; quote strings, e.g. init=rtn"
            ) from None
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

    check_output_path(out, a.overwrite, is_dir=True)  # before any long work
    _check_writable_file(a.json, "--json")
    recipe = _recipe_from_args(a)
    cc = CalibConfig(a.calib, a.calib_samples, a.calib_seq_len, a.seed)
    res = lmpress.quantize(
        a.model,
        recipe,
        calib=a.calib,
        calib_config=cc,
        batch_size=a.batch_size,
        progress=not a.quiet,
    )
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
        **stats,
    }
    print(
        f"saved {out}: {stats['quantized_modules']} modules, "
        f"{stats['bits_per_weight']:.3f} bits/weight (quantized), "
        f"{stats['bits_per_weight_model']:.3f} (whole model), {stats['size_bytes'] / 1e6:.1f} MB, "
        f"{summary['quantize_seconds']:.1f} s, peak RSS {summary['peak_rss_mb']:.0f} MiB"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2))
    return 0


def cmd_eval(a) -> int:
    import lmpress

    _check_writable_file(a.json, "--json")
    res: dict = {}
    tasks = None
    if a.tasks:
        from lmpress.eval.tasks import parse_task_list

        tasks = parse_task_list(a.tasks)  # before loading anything: typos fail fast
    if a.ppl or not a.tasks:
        text = a.ppl or "wikitext2"
        lm_eval_style = a.ppl_convention == "lm-eval"
        if lm_eval_style and a.base:
            raise LmpressError("--base (KL) is not defined for --ppl-convention lm-eval")
        ctx = a.ctx or {"llamacpp": 512, "lm-eval": None}.get(a.ppl_convention, 2048)
        windows = a.windows if a.windows is not None else (0 if lm_eval_style else 16)
        res = lmpress.evaluate(
            a.model,
            text=text,
            ctx=ctx,
            windows=windows or None,
            base=a.base,
            progress=not a.quiet,
            convention=a.ppl_convention,
        )
        if lm_eval_style:
            line = (
                f"word_perplexity={res['word_perplexity']:.4f} "
                f"byte_perplexity={res['byte_perplexity']:.5f} "
                f"bits_per_byte={res['bits_per_byte']:.5f} ({text}, lm-eval convention, "
                f"max_length={res['max_length']}, documents={res['documents']})"
            )
        else:
            line = (
                f"ppl={res['ppl']:.4f} ({text}, {a.ppl_convention} convention, "
                f"ctx={res['ctx']}, windows={res['windows']})"
            )
        if "kl_mean" in res:
            line += (
                f" kl={res['kl_mean']:.5f}±{res['kl_stderr']:.5f} "
                f"(median {res['kl_median']:.5f}, p99 {res['kl_p99']:.4f}, "
                f"p99.9 {res['kl_p999']:.4f}) top1={res['top1_agreement']:.4f} "
                f"dp={res['delta_p_mean']:+.5f} ln(ppl/base)={res['ln_ppl_ratio']:+.5f}"
            )
            if res["windows"] > 1:
                line += f"±{res['ln_ppl_ratio_stderr_windows']:.5f} (stderr over windows)"
        if res.get("bits_per_weight"):
            line += f" bits/weight={res['bits_per_weight']:.3f}"
        print(line)
    if tasks:
        res["tasks"] = lmpress.evaluate_tasks(
            a.model, tasks, limit=a.limit, batch_size=a.batch_size, progress=not a.quiet
        )
        for name, r in res["tasks"].items():
            parts = [
                f"{m}={r[m]:.4f}±{r[m + '_stderr']:.4f}"
                for m in ("acc", "acc_norm", "ppl")
                if m in r
            ]
            print(f"{name}: {' '.join(parts)} (n={r['n']})")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


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
        **stats,
    }
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{p}  (lmpress {info['lmpress_version']}, method {info['method']})")
    print(f"  source: {info['source_model']}")
    print(f"  schemes: {', '.join(f'{k} x{v}' for k, v in schemes.items())}")
    print(
        f"  bits/weight: {stats['bits_per_weight']:.3f} (quantized modules), "
        f"{stats['bits_per_weight_model']:.3f} (whole model)"
    )
    print(f"  size on disk: {stats['size_bytes'] / 1e6:.2f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
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
        return cmds[a.cmd](a)
    except LmpressError as e:
        print(f"lmpress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmpress: interrupted; no output was written", file=sys.stderr)
        return 130
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
