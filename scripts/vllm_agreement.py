"""vLLM against lmpress on the real model: the W8A8 export's next-token agreement.

SmolLM2-135M quantized to ``w8sa8`` (int8 weights per channel, int8 activations per
token) by RTN, exported to compressed-tensors, and run by vLLM's CPU build (its own
venv, ``scripts/install_vllm.sh``) on the first ``--tokens`` tokens of WikiText-2 (the
perplexity protocol's text): for every position, the token vLLM ranks first
(teacher-forced, ``prompt_logprobs``) against lmpress's argmax on the same prefix.
Writes ``benchmarks/vllm_agreement.json`` (``BENCHMARKS.md``'s activation section
reads it).

    python scripts/vllm_agreement.py [--scheme w8sa8] [--tokens 512]
"""

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lmpress  # noqa: E402
from lmpress.checkpoint import save_checkpoint  # noqa: E402
from lmpress.eval.perplexity import eval_ids  # noqa: E402
from lmpress.models.load import load_model  # noqa: E402
from lmpress.nn.qlinear import QLinear  # noqa: E402
from lmpress.pipeline import quantize_model  # noqa: E402
from lmpress.recipe import Recipe  # noqa: E402
from lmpress.report.machine import cpu_name  # noqa: E402

RUNNER = """
import json, os, sys
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

def main(path, ids_file, dtype):
    from vllm import LLM, SamplingParams
    ids = json.load(open(ids_file))
    llm = LLM(path, dtype=dtype, skip_tokenizer_init=True, max_model_len=len(ids) + 8,
              enforce_eager=True, max_num_seqs=1)
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
    out = llm.generate([{"prompt_token_ids": ids}], params)[0]
    top = [None] + [next(t for t, lp in d.items() if lp.rank == 1) for d in out.prompt_logprobs[1:]]
    print("VLLM_TOP1 " + json.dumps(top), flush=True)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="w8sa8")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--dtype", default="bfloat16", help="vLLM's activation dtype")
    ap.add_argument("--venv", default=os.environ.get("LMPRESS_VLLM_VENV", str(REPO / ".venv-vllm")))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "vllm_agreement.json"))
    a = ap.parse_args()
    py = Path(a.venv) / "bin" / "python"
    if not py.exists():
        sys.exit(f"no vLLM venv at {a.venv}: run scripts/install_vllm.sh")
    base = load_model("smollm2-135m")
    ids = eval_ids(base.tokenizer, "wikitext2")[: a.tokens]
    model = base.model
    quantize_model(model, Recipe(method="rtn", scheme=a.scheme), None, progress=False)
    with torch.no_grad():
        mine = model(ids[None]).logits[0].argmax(-1).tolist()  # mine[i]: token i+1
        # the same weights with float inputs: how much of any disagreement is the inputs'
        qmods = [m for m in model.modules() if isinstance(m, QLinear)]
        schemes = [m.scheme for m in qmods]
        for m in qmods:
            m.scheme = m.scheme.weight_only
        float_inputs = model(ids[None]).logits[0].argmax(-1).tolist()
        for m, sch in zip(qmods, schemes, strict=True):
            m.scheme = sch
    with tempfile.TemporaryDirectory() as tmp:
        ck = save_checkpoint(model, base.tokenizer, Path(tmp) / "ck")
        out = Path(tmp) / "ct"
        lmpress.export_model(ck, "compressed-tensors", out, progress=False)
        (Path(tmp) / "ids.json").write_text(json.dumps(ids.tolist()))
        (Path(tmp) / "run.py").write_text(RUNNER)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        proc = subprocess.run(
            [str(py), str(Path(tmp) / "run.py"), str(out), str(Path(tmp) / "ids.json"), a.dtype],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
        )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("VLLM_TOP1 ")), None)
    if line is None:
        sys.exit(
            f"vLLM gave no result (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    theirs = json.loads(line.removeprefix("VLLM_TOP1 "))[1:]  # theirs[i]: token i+1
    same = sum(int(x == y) for x, y in zip(mine[:-1], theirs, strict=True))
    same_float = sum(int(x == y) for x, y in zip(float_inputs[:-1], theirs, strict=True))
    same_lmpress = sum(int(x == y) for x, y in zip(float_inputs, mine, strict=True))
    row = {
        "scheme": a.scheme,
        "method": "rtn",
        "positions": len(theirs),
        "agreement": same / len(theirs),
        # diagnostics: vLLM against lmpress's weights with float inputs, and lmpress's
        # own quantized-input model against its float-input one
        "agreement_with_float_inputs": same_float / len(theirs),
        "lmpress_inputs_vs_float_inputs": same_lmpress / len(mine),
        "cpu": cpu_name(),
        "date": f"{dt.date.today()}",
        "vllm_dtype": a.dtype,
        "command": f"python scripts/vllm_agreement.py --scheme {a.scheme} --tokens {a.tokens}"
        f" --dtype {a.dtype}",
    }
    Path(a.out).write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
