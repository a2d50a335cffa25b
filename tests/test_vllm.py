"""vLLM loads lmpress's compressed-tensors exports and generates from them (heavy).

vLLM lives in a venv of its own (``scripts/install_vllm.sh``, default ``.venv-vllm``;
``LMPRESS_VLLM_VENV`` names another): its CPU wheel pins torch, transformers and
compressed-tensors versions of its own. Each scheme is exported from a tiny random
Llama and run by that venv's python in a subprocess: ``vllm.LLM(path)`` and a few
greedy tokens. vLLM's CPU build has kernels for some schemes on some CPUs only; where
it has none, the test skips with vLLM's own message. What ran where is appended to
the JSON file ``LMPRESS_VLLM_RECORD`` names, if any (``make bench`` keeps it in
``benchmarks/vllm.json``), keyed by the CPU's model name and AVX flags.

Run with ``pytest --heavy tests/test_vllm.py``.
"""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import lmpress
from lmpress.checkpoint import save_checkpoint
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("LMPRESS_VLLM_VENV", REPO / ".venv-vllm"))
SCHEMES = ["w4g128", "w8", "fp8", "nvfp4", "mxfp4", "w8sa8", "fp8a8"]
PROMPT = [1, 5, 9, 13, 17, 21]
NEW_TOKENS = 4

# vLLM's words when it has no kernel for a scheme on this machine (anything else, a
# config it cannot parse or weights it cannot load, is a failure of the export)
NO_KERNEL = re.compile(
    r"Failed to find a kernel|kernel \S+ is not supported|not available"
    r"|'_OpNamespace' '_C' object has no attribute"
)
# the vLLM compressed-tensors scheme each export must map to (its module's suffix): a
# traceback through another one means vLLM read the config as something else
VLLM_SCHEME = {
    "w4g128": "wNa16",
    "w8": "wNa16",
    "fp8": "w8a16_fp8",
    "nvfp4": "w4a4_nvfp4",
    "mxfp4": "w4a4_mxfp4",
    "w8sa8": "w8a8_int8",
    "fp8a8": "w8a8_fp8",
}
SCHEME_FILE = re.compile(r"compressed_tensors/schemes/compressed_tensors_(\w+)\.py")

# Run by the vLLM venv's python: one model, greedy tokens, one JSON line. The main
# guard and in-process engine keep vLLM from re-running this file in a spawned child.
RUNNER = """
import json, os, sys, traceback

def main(path, prompt, n):
    try:
        from vllm import LLM, SamplingParams
        llm = LLM(path, dtype="bfloat16", skip_tokenizer_init=True, max_model_len=64,
                  enforce_eager=True, max_num_seqs=1)
        params = SamplingParams(max_tokens=n, temperature=0.0, detokenize=False)
        out = llm.generate([{"prompt_token_ids": prompt}], params)
        result = {"ok": True, "tokens": list(out[0].outputs[0].token_ids)}
    except Exception as e:
        result = {"ok": False, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-4000:]}
    print("VLLM_RESULT " + json.dumps(result), flush=True)

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the model needs little
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))
"""


def vllm_python() -> Path | None:
    """The vLLM venv's python, or None when the venv or vLLM in it is missing."""
    py = VENV / "bin" / "python"
    if not py.exists() or not list(VENV.glob("lib/python*/site-packages/vllm/__init__.py")):
        return None
    return py


def cpu_key() -> str:
    """``model name`` of /proc/cpuinfo and which of avx2 / avx512f / avx512_bf16 it has."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.M) or ["", ""])[1].split())
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name[1].strip() if name else 'unknown CPU'} [{' '.join(have) or 'no avx2'}]"


def record(scheme: str, outcome: str) -> None:
    """Merge ``{cpu: {scheme: outcome}}`` into the file ``LMPRESS_VLLM_RECORD`` names."""
    path = os.environ.get("LMPRESS_VLLM_RECORD")
    if not path:
        return
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    data.setdefault(cpu_key(), {})[scheme] = outcome
    p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def tiny_llama_export(tmp_path: Path, scheme: str) -> Path:
    """A two-block random Llama (hidden 256, MLP 512: whole 128-groups and 128-blocks)
    quantized with RTN and exported to compressed-tensors."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = AutoModelForCausalLM.from_config(cfg).eval()
    ids = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(0))
    quantize_model(model, Recipe(method="rtn", scheme=scheme), ids, progress=False)
    ckpt = save_checkpoint(model, None, tmp_path / "ckpt")
    out = tmp_path / f"ct-{scheme}"
    with warnings.catch_warnings():
        # nvfp4: lmpress's per-matrix tensor scales, which vLLM fuses (the export's own
        # test covers that warning)
        warnings.filterwarnings("ignore", "nvfp4 q/k/v", UserWarning)
        lmpress.export_model(ckpt, "compressed-tensors", out, progress=False)
    return out


@pytest.mark.heavy
@pytest.mark.parametrize("scheme", SCHEMES)
def test_vllm_generates_from_export(tmp_path, scheme):
    py = vllm_python()
    if py is None:
        pytest.skip(f"no vLLM venv at {VENV}: run scripts/install_vllm.sh (make bench does)")
    out = tiny_llama_export(tmp_path, scheme)
    runner = tmp_path / "run_vllm.py"
    runner.write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    proc = subprocess.run(
        [str(py), str(runner), str(out), json.dumps(PROMPT), str(NEW_TOKENS)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("VLLM_RESULT ")), None)
    if line is None:
        tail = (proc.stdout + proc.stderr)[-3000:]
        record(scheme, f"failed: vLLM exited {proc.returncode} with no result")
        pytest.fail(f"vLLM exited {proc.returncode} without a result:\n{tail}")
    result = json.loads(line.removeprefix("VLLM_RESULT "))
    if not result["ok"]:
        err = result["error"]
        seen = SCHEME_FILE.findall(result["traceback"])
        assert not seen or seen[-1] == VLLM_SCHEME[scheme], (seen, err)
        if NO_KERNEL.search(err):
            first = " ".join(err.split())[:400]
            via = f" (vLLM scheme {seen[-1]})" if seen else ""
            record(scheme, f"skipped{via}: {first}")
            pytest.skip(f"vLLM on {cpu_key()} has no kernel for {scheme}{via}: {first}")
        record(scheme, f"failed: {err[:400]}")
        pytest.fail(f"vLLM could not run the {scheme} export: {err}\n{result['traceback']}")
    tokens = result["tokens"]
    record(scheme, f"ran: {tokens}")
    assert len(tokens) == NEW_TOKENS and all(0 <= t < 512 for t in tokens), tokens
    print(f"vLLM {scheme} on {cpu_key()}: {tokens}", file=sys.stderr)
