#!/usr/bin/env python3
"""The demo: quantize the default model with RTN and GPTQ, evaluate, print a table,
then generate with the GPTQ model and export it to GGUF.

Every step is an ``lmpress`` command, printed before it runs, so the demo is
also a tour of the CLI. Defaults keep it to a few minutes on two cores; pass
``--calib-samples 128 --windows 16`` for the benchmark protocol.
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path


def sh(args: list[str]) -> None:
    print(f"\n$ lmpress {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "lmpress.cli", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--scheme", default="w4g128")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--out", default="out")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(exist_ok=True)
    rows = []
    sh(["eval", a.model, "--windows", str(a.windows), "--quiet", "--json", str(out / "ref.json")])
    rows.append(("float32", "-", json.loads((out / "ref.json").read_text())))
    for method in ("rtn", "gptq"):
        d = out / f"demo-{method}-{a.scheme}"
        sh(
            [
                "quantize",
                a.model,
                "--method",
                method,
                "--scheme",
                a.scheme,
                "--calib-samples",
                str(a.calib_samples),
                "-o",
                str(d),
                "--overwrite",
                "--json",
                str(d) + ".quant.json",
            ]
        )
        sh(
            [
                "eval",
                str(d),
                "--windows",
                str(a.windows),
                "--base",
                a.model,
                "--quiet",
                "--json",
                str(d) + ".eval.json",
            ]
        )
        res = json.loads(Path(str(d) + ".eval.json").read_text())
        res["quantize_seconds"] = json.loads(Path(str(d) + ".quant.json").read_text())[
            "quantize_seconds"
        ]
        rows.append((method, a.scheme, res))
        sh(["info", str(d)])
    ctx = rows[0][2]["ctx"]
    print(
        f"\nWikiText-2 test, context {ctx}, {a.windows} windows "
        f"(the benchmark protocol uses 16: see BENCHMARKS.md)\n"
    )
    print(
        f"{'method':8} {'scheme':8} {'bits/w':>7} {'ppl':>8} {'KL':>8} {'top-1':>7} {'quant s':>8}"
    )
    for method, scheme, r in rows:
        bpw = r.get("bits_per_weight") or 32.0
        kl = r.get("kl_mean", 0.0)
        top1 = r.get("top1_agreement", 1.0)
        qs = r.get("quantize_seconds") or 0.0
        print(f"{method:8} {scheme:8} {bpw:7.3f} {r['ppl']:8.3f} {kl:8.4f} {top1:7.3f} {qs:8.1f}")
    # Run the compressed model on the C kernels, and hand it to llama.cpp.
    gptq = out / f"demo-gptq-{a.scheme}"
    sh(["generate", str(gptq), "--prompt", "The history of the city", "--max-new-tokens", "32"])
    sh(["export", str(gptq), "--to", "gguf", "-o", str(gptq) + ".gguf", "--overwrite", "--quiet"])


if __name__ == "__main__":
    main()
