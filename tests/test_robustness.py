"""Bad inputs, hostile values and interruptions: each refused in one line naming the
file or tensor and the fix, with nothing of the user's lost and nothing half-written.

Every case of :data:`CASES` is a command run on a small input it builds; its outcome
(exit status and the error's first line, with paths made relative) is compared with
the expected one, and the table of all of them is ``docs/robustness.md``, which
``test_the_table_is_current`` checks (``LMPRESS_WRITE_ROBUSTNESS=1`` rewrites it).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REPO, needs_smollm2
from safetensors.torch import load_file, save_file

from lmpress.cli import main

pytestmark = needs_smollm2  # the tiny models carry the real model's tokenizer
TABLE = REPO / "docs" / "robustness.md"


@dataclass(frozen=True)
class Case:
    """One bad input: the issue's ``point`` it belongs to, what it is, how to build it
    (``make(tmp, inputs) -> argv``), the exit status and a part of the error expected,
    and ``after(tmp)``: what must hold afterwards (the user's files intact...)."""

    point: int
    name: str
    what: str
    make: Callable[[Path, "Inputs"], list[str]]
    code: int
    needle: str
    after: Callable[[Path], None] | None = None


CASES: list[Case] = []


def case(point: int, what: str, code: int, needle: str, after=None):
    def deco(make):
        CASES.append(Case(point, make.__name__, what, make, code, needle, after))
        return make

    return deco


class Inputs:
    """Clean inputs to damage: a tiny Llama directory, an lmpress checkpoint of it
    (``w4g32``, and ``w4g24`` for a scheme read wrongly), the real GGUF."""

    def __init__(self, tiny: Path, ckpt: Path, ckpt_g24: Path):
        self.tiny, self.ckpt, self.ckpt_g24 = tiny, ckpt, ckpt_g24

    def copy(self, src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    def model(self, tmp: Path, name: str = "model") -> Path:
        return self.copy(self.tiny, tmp / name)

    def checkpoint(self, tmp: Path) -> Path:
        return self.copy(self.ckpt, tmp / "ckpt")


def _edit_state(d: Path, fn: Callable[[dict], None], file: str = "model.safetensors") -> None:
    sd = load_file(str(d / file))
    fn(sd)
    save_file(sd, str(d / file), metadata={"format": "pt"})


def _edit_config(d: Path, fn: Callable[[dict], None]) -> None:
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def _absent(*names: str) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        for n in names:
            assert not (tmp / n).exists(), n
        left = [p.name for p in tmp.rglob(".*tmp-*")]
        assert not left, left

    return check


def _present(*names: str) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        for n in names:
            assert (tmp / n).exists(), n

    return check


QUANT = ["--scheme", "w4g32", "--quiet"]
EVAL = ["--windows", "1", "--ctx", "64", "--quiet"]

# -- 1. --overwrite never deletes what lmpress did not write, nor an input ------------


@case(
    1,
    "`quantize -o DIR --overwrite`, DIR holds the user's own file",
    2,
    "has no .lmpress-output",
    _present("mine/notes.txt"),
)
def overwrite_users_folder(tmp, inp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("mine")
    return ["quantize", inp.model(tmp), "-o", tmp / "mine", "--overwrite", *QUANT]


@case(
    1,
    "`quantize X -o X --overwrite`: the output is the source model",
    2,
    "is the input",
    _present("model/model.safetensors"),
)
def overwrite_the_source(tmp, inp):
    m = inp.model(tmp)
    return ["quantize", m, "-o", m, "--overwrite", *QUANT]


@case(
    1,
    "`quantize X -o PARENT --overwrite`: the output holds the source",
    2,
    "contains the input",
    _present("in/model/config.json"),
)
def output_holds_the_source(tmp, inp):
    m = inp.copy(inp.tiny, tmp / "in" / "model")
    return ["quantize", m, "-o", tmp / "in", "--overwrite", *QUANT]


@case(
    1,
    "`quantize X -o X/q`: the output inside the source model",
    2,
    "lies inside the input",
    _absent("model/q"),
)
def output_inside_the_source(tmp, inp):
    m = inp.model(tmp)
    return ["quantize", m, "-o", m / "q", *QUANT]


@case(
    1,
    "`export CKPT -o CKPT --overwrite`: the export replaces its checkpoint",
    2,
    "is the input",
    _present("ckpt/model.safetensors"),
)
def export_over_its_checkpoint(tmp, inp):
    c = inp.checkpoint(tmp)
    return ["export", c, "--to", "compressed-tensors", "-o", c, "--overwrite", "--quiet"]


@case(
    1,
    "`export --to gguf -o FILE --overwrite`, FILE is not a GGUF",
    2,
    "does not start with",
    _present("notes.gguf"),
)
def export_over_a_users_file(tmp, inp):
    (tmp / "notes.gguf").write_text("mine")
    return ["export", inp.ckpt, "--to", "gguf", "-o", tmp / "notes.gguf", "--overwrite", "--quiet"]


@case(
    1,
    "`quantize --json` names the source model's config.json",
    2,
    "lies inside the input",
    _absent("q"),
)
def json_over_the_source(tmp, inp):
    m = inp.model(tmp)
    return ["quantize", m, "-o", tmp / "q", "--json", m / "config.json", *QUANT]


@case(
    1, "`--overwrite` of a checkpoint lmpress wrote (allowed)", 0, "", _present("q/.lmpress-output")
)
def overwrite_own_checkpoint(tmp, inp):
    inp.copy(inp.ckpt, tmp / "q")
    return ["quantize", inp.model(tmp), "-o", tmp / "q", "--overwrite", *QUANT]


# -- 2. every tensor present, none extra, each of its shape ---------------------------


@case(2, "a weight tensor missing from model.safetensors", 2, "lacks 1 tensor(s)", _absent("q"))
def missing_tensor(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(2, "an extra tensor the config has no place for", 2, "the config has no place for")
def unexpected_tensor(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, lambda sd: sd.__setitem__("model.extra.weight", torch.zeros(4)))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(2, "a tensor of the wrong shape", 2, "is stored as [32]")
def wrong_shape_tensor(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, lambda sd: sd.__setitem__("model.norm.weight", torch.ones(32)))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(
    2,
    "config.json claims 3 layers, the weights hold 2",
    2,
    "num_hidden_layers=3, but the weights hold 2",
)
def more_layers_in_config(tmp, inp):
    m = inp.model(tmp)
    _edit_config(m, lambda c: c.__setitem__("num_hidden_layers", 3))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(
    2,
    "config.json claims 1 layer, the weights hold 2",
    2,
    "num_hidden_layers=1, but the weights hold 2",
)
def fewer_layers_in_config(tmp, inp):
    m = inp.model(tmp)
    _edit_config(m, lambda c: c.__setitem__("num_hidden_layers", 1))
    return ["eval", m, *EVAL]


@case(2, "config.json omits num_hidden_layers", 2, "lacks num_hidden_layers")
def layers_omitted(tmp, inp):
    m = inp.model(tmp)
    _edit_config(m, lambda c: c.pop("num_hidden_layers"))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(
    2,
    "a GGUF whose block_count is larger than its blocks",
    2,
    "llama.block_count=31, but the weights hold 30",
)
def gguf_block_count(tmp, inp):
    from gguf import GGUFReader

    from lmpress.models.load import smollm2_gguf_path

    g = tmp / "m.gguf"
    shutil.copy(smollm2_gguf_path(), g)
    r = GGUFReader(str(g), "r+")
    f = r.fields["llama.block_count"]
    f.parts[f.data[0]][0] = 31
    r.data.flush()
    del r
    return ["quantize", g, "-o", tmp / "q", *QUANT]


@case(
    2, "an lmpress checkpoint missing a tensor", 2, "lacks model.layers.0.self_attn.q_proj.scales"
)
def checkpoint_missing_tensor(tmp, inp):
    c = inp.checkpoint(tmp)
    _edit_state(c, lambda sd: sd.pop("model.layers.0.self_attn.q_proj.scales"))
    return ["eval", c, *EVAL]


# -- 3. non-finite weights and results -------------------------------------------------


@case(
    3,
    "a NaN in a linear weight",
    2,
    "model.layers.0.mlp.up_proj.weight holds 1 NaN/Inf",
    _absent("q"),
)
def nan_weight(tmp, inp):
    m = inp.model(tmp)
    _edit_state(
        m, lambda sd: sd["model.layers.0.mlp.up_proj.weight"].view(-1).__setitem__(5, float("nan"))
    )
    return ["quantize", m, "-o", tmp / "q", "--method", "hqq", *QUANT]


@case(3, "an Inf in a norm weight", 2, "model.norm.weight holds 1 NaN/Inf")
def inf_norm(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, lambda sd: sd["model.norm.weight"].__setitem__(0, float("inf")))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(3, "an lmpress checkpoint with a NaN scale", 2, "q_proj.scales holds 1 NaN/Inf")
def nan_scale(tmp, inp):
    c = inp.checkpoint(tmp)
    _edit_state(
        c,
        lambda sd: (
            sd["model.layers.0.self_attn.q_proj.scales"].view(-1).__setitem__(0, float("nan"))
        ),
    )
    return ["eval", c, *EVAL]


@case(3, "finite weights whose logits overflow: `eval` gives ppl=nan", 2, "perplexity of")
def eval_nan_perplexity(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, lambda sd: sd["model.norm.weight"].fill_(3e38))
    return ["eval", m, *EVAL]


# -- 4. scales beyond their dtype ------------------------------------------------------


def _scaled_weight(factor: float):
    def edit(sd):
        sd["model.layers.0.mlp.down_proj.weight"].mul_(factor)

    return edit


@case(4, "weights near 1e6: fp16 scales would overflow", 2, "exceed fp16's largest value")
def scale_overflow(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, _scaled_weight(1e6 / 0.06))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(4, "the same weights with bf16 scales (allowed)", 0, "")
def scale_overflow_bf16(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, _scaled_weight(1e6 / 0.06))
    return ["quantize", m, "-o", tmp / "q", "--scheme", "w4g32:bf16", "--quiet"]


@case(4, "weights near 1e-9: fp16 scales would underflow to 0", 2, "fall below fp16's smallest")
def scale_underflow(tmp, inp):
    m = inp.model(tmp)
    _edit_state(m, _scaled_weight(1e-9 / 0.06))
    return [
        "quantize",
        m,
        "-o",
        tmp / "q",
        "--method",
        "gptq",
        "--calib-samples",
        "2",
        "--calib-seq-len",
        "32",
        "--calib",
        _calib(tmp),
        *QUANT,
    ]


def _calib(tmp: Path) -> Path:
    p = tmp / "calib.txt"
    p.write_text("The quick brown fox jumps over the lazy dog. " * 200)
    return p


# -- 5. stored tensors against the declared scheme ------------------------------------


@case(5, "a checkpoint's fp16 scales stored as float32", 2, "is stored as [64, 2] torch.float32")
def float32_scales(tmp, inp):
    c = inp.checkpoint(tmp)
    k = "model.layers.0.self_attn.q_proj.scales"
    _edit_state(c, lambda sd: sd.__setitem__(k, sd[k].float()))
    return ["eval", c, *EVAL]


@case(5, "a checkpoint's scales relabelled int16", 2, "torch.int16")
def int16_scales(tmp, inp):
    c = inp.checkpoint(tmp)
    k = "model.layers.0.self_attn.q_proj.scales"
    _edit_state(c, lambda sd: sd.__setitem__(k, sd[k].view(torch.int16)))
    return ["eval", c, *EVAL]


def _edit_schemes(fn):
    def edit(cfg):
        for spec in cfg["quantization_config"]["modules"].values():
            fn(spec)

    return edit


@case(5, "a checkpoint declaring bf16 scales that stores fp16", 2, "bfloat16")
def bf16_declared(tmp, inp):
    c = inp.checkpoint(tmp)

    def relabel(spec):
        spec["scheme"]["scale_dtype"] = "bfloat16"
        spec.pop("components", None)  # as a checkpoint from before the component list

    _edit_config(c, _edit_schemes(relabel))
    return ["eval", c, *EVAL]


@case(5, "a w4g24 checkpoint whose config says g16", 2, "is stored as")
def group_relabelled(tmp, inp):
    c = inp.copy(inp.ckpt_g24, tmp / "ckpt")

    def relabel(spec):
        spec["scheme"]["group_size"] = 16
        spec.pop("components", None)

    _edit_config(c, _edit_schemes(relabel))
    return ["eval", c, *EVAL]


@case(
    5,
    "a checkpoint's float norm weight stored as fp16",
    2,
    "model.norm.weight is stored as [64] torch.float16",
)
def fp16_norm_in_checkpoint(tmp, inp):
    c = inp.checkpoint(tmp)
    _edit_state(c, lambda sd: sd.__setitem__("model.norm.weight", sd["model.norm.weight"].half()))
    return ["eval", c, *EVAL]


# -- 6. sizes bounded by the model and the machine ------------------------------------


@case(6, "`generate --threads 100000`", 2, "--threads 100000: this machine has")
def absurd_threads(tmp, inp):
    return ["generate", inp.ckpt, "--prompt", "Hello", "--threads", "100000", "--quiet"]


@case(
    6,
    "`--calib-seq-len` beyond the model's positions",
    2,
    "--calib-seq-len 200000 exceeds the model's 256 positions",
)
def calib_beyond_positions(tmp, inp):
    return [
        "quantize",
        inp.tiny,
        "-o",
        tmp / "q",
        "--method",
        "gptq",
        "--calib-seq-len",
        "200000",
        *QUANT,
    ]


@case(6, "`--calib-samples 1000000000`", 2, "GiB of calibration activations")
def calib_too_many(tmp, inp):
    return [
        "quantize",
        inp.tiny,
        "-o",
        tmp / "q",
        "--method",
        "gptq",
        "--calib-samples",
        "1000000000",
        "--calib-seq-len",
        "128",
        *QUANT,
    ]


@case(
    6,
    "a config.json claiming 1e9 layers",
    2,
    "num_hidden_layers=1000000000, but the weights hold 2",
)
def billion_layers(tmp, inp):
    m = inp.model(tmp)
    _edit_config(m, lambda c: c.__setitem__("num_hidden_layers", 10**9))
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(
    6,
    "`eval --ctx` beyond the model's positions",
    2,
    "--ctx 100000 exceeds the model's 256 positions",
)
def eval_ctx_beyond(tmp, inp):
    return ["eval", inp.ckpt, "--ctx", "100000", "--quiet"]


# -- 7. no work lost after it is done -------------------------------------------------


@case(
    7,
    "`quantize --json` pointing at a directory: refused before any work",
    2,
    "is a directory",
    _absent("q"),
)
def json_is_a_directory(tmp, inp):
    (tmp / "d").mkdir()
    return ["quantize", inp.tiny, "-o", tmp / "q", "--json", tmp / "d", *QUANT]


@case(
    7,
    "`generate` past the model's positions: refused before decoding",
    2,
    "exceed the model's 256 positions",
)
def generate_past_positions(tmp, inp):
    return [
        "generate",
        inp.ckpt,
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "400",
        "--no-stream",
        "--quiet",
    ]


# -- 8. interruption leaves nothing behind --------------------------------------------


@case(
    8,
    "a `.q.tmp-*` left by a killed run: the next run removes it",
    0,
    "",
    _absent(".q.tmp-999999999-x", ".q.tmp-old"),
)
def stale_temporary(tmp, inp):
    (tmp / ".q.tmp-999999999-x").mkdir()  # a process id that cannot be alive
    (tmp / ".q.tmp-old").mkdir()  # the name older versions used
    return ["quantize", inp.tiny, "-o", tmp / "q", *QUANT]


# -- 9. damaged files: a message that names the file ----------------------------------


@case(9, "config.json is not JSON", 2, "config.json: not valid JSON")
def config_not_json(tmp, inp):
    m = inp.model(tmp)
    (m / "config.json").write_text("{not json")
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(9, "config.json is a JSON list", 2, "config.json: expected a JSON object")
def config_a_list(tmp, inp):
    m = inp.model(tmp)
    (m / "config.json").write_text("[1, 2]")
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(9, "config.json is binary", 2, "config.json: not UTF-8 text")
def config_binary(tmp, inp):
    m = inp.model(tmp)
    (m / "config.json").write_bytes(b"\xff\xfe\x00" * 10)
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(9, "model.safetensors truncated", 2, "model.safetensors: not a readable safetensors file")
def safetensors_truncated(tmp, inp):
    m = inp.model(tmp)
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(9, "model.safetensors empty", 2, "model.safetensors: not a readable safetensors file")
def safetensors_empty(tmp, inp):
    m = inp.model(tmp)
    (m / "model.safetensors").write_bytes(b"")
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(9, "tokenizer.json damaged", 2, "tokenizer.json: not valid JSON")
def tokenizer_damaged(tmp, inp):
    m = inp.model(tmp)
    (m / "tokenizer.json").write_text("{")
    return ["quantize", m, "-o", tmp / "q", *QUANT]


@case(9, "a .gguf file that is not GGUF", 2, "m.gguf: not a readable GGUF file")
def gguf_not_gguf(tmp, inp):
    (tmp / "m.gguf").write_bytes(b"hello world" * 100)
    return ["quantize", tmp / "m.gguf", "-o", tmp / "q", *QUANT]


@case(9, "an empty .gguf file", 2, "m.gguf: not a readable GGUF file")
def gguf_empty(tmp, inp):
    (tmp / "m.gguf").write_bytes(b"")
    return ["quantize", tmp / "m.gguf", "-o", tmp / "q", *QUANT]


@case(9, "a checkpoint whose quantization_config.modules is a list", 2, "quantization_config")
def checkpoint_modules_list(tmp, inp):
    c = inp.checkpoint(tmp)
    _edit_config(c, lambda cfg: cfg["quantization_config"].__setitem__("modules", [1]))
    return ["eval", c, *EVAL]


@case(9, "a checkpoint whose module scheme is a string", 2, "quantization_config")
def checkpoint_scheme_string(tmp, inp):
    c = inp.checkpoint(tmp)
    _edit_config(c, _edit_schemes(lambda spec: spec.__setitem__("scheme", "w4")))
    return ["eval", c, *EVAL]


@case(9, "a checkpoint naming a module the model lacks", 2, "quantization_config")
def checkpoint_unknown_module(tmp, inp):
    c = inp.checkpoint(tmp)

    def add(cfg):
        mods = cfg["quantization_config"]["modules"]
        mods["model.layers.9.mlp.up_proj"] = next(iter(mods.values()))

    _edit_config(c, add)
    return ["eval", c, *EVAL]


@case(9, "a recipe file that is binary", 2, "recipe file")
def recipe_binary(tmp, inp):
    (tmp / "r.yaml").write_bytes(b"\xff\xfe\x00\x01" * 8)
    return ["quantize", inp.tiny, "-o", tmp / "q", "--recipe", tmp / "r.yaml", "--quiet"]


@case(9, "a recipe whose scheme is a number", 2, "r.yaml")
def recipe_bad_scheme(tmp, inp):
    (tmp / "r.yaml").write_text("scheme: 5\n")
    return ["quantize", inp.tiny, "-o", tmp / "q", "--recipe", tmp / "r.yaml", "--quiet"]


@case(9, "a recipe whose overrides is a string", 2, "r.yaml")
def recipe_bad_overrides(tmp, inp):
    (tmp / "r.yaml").write_text("scheme: w4g32\noverrides: down_proj\n")
    return ["quantize", inp.tiny, "-o", tmp / "q", "--recipe", tmp / "r.yaml", "--quiet"]


@case(9, "a recipe whose method_args is a list", 2, "r.yaml")
def recipe_bad_method_args(tmp, inp):
    (tmp / "r.yaml").write_text("scheme: w4g32\nmethod_args: [1]\n")
    return ["quantize", inp.tiny, "-o", tmp / "q", "--recipe", tmp / "r.yaml", "--quiet"]


@case(9, "a calibration file that is binary", 2, "calib.bin is not UTF-8 text")
def calib_binary(tmp, inp):
    (tmp / "calib.bin").write_bytes(bytes(range(256)) * 50)
    return [
        "quantize",
        inp.tiny,
        "-o",
        tmp / "q",
        "--method",
        "gptq",
        "--calib",
        tmp / "calib.bin",
        "--calib-seq-len",
        "128",
        *QUANT,
    ]


@case(9, "an evaluation text that is binary", 2, "text.bin is not UTF-8 text")
def eval_text_binary(tmp, inp):
    (tmp / "text.bin").write_bytes(bytes(range(256)) * 50)
    return ["eval", inp.ckpt, "--ppl", tmp / "text.bin", "--ctx", "64", "--windows", "1", "--quiet"]


@case(9, "a task file of broken JSON lines", 2, "t.jsonl")
def task_file_broken(tmp, inp):
    (tmp / "t.jsonl").write_text("{broken\n")
    return ["eval", inp.ckpt, "--tasks", f"boolq={tmp / 't.jsonl'}", "--quiet"]


@case(9, "an anchors file that is not a list", 2, "anchors file")
def anchors_not_a_list(tmp, inp):
    (tmp / "a.json").write_text('{"label": 1}')
    return [
        "sweep",
        inp.tiny,
        "-o",
        tmp / "s",
        "--schemes",
        "w4g32",
        "--methods",
        "rtn",
        "--anchors",
        tmp / "a.json",
        "--quiet",
    ]


# -- the runner --------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_llama_dir):
    import lmpress

    root = tmp_path_factory.mktemp("robust-inputs")
    ckpts = []
    for scheme in ("w4g32", "w4g24"):
        res = lmpress.quantize(
            str(tiny_llama_dir), {"method": "rtn", "scheme": scheme}, progress=False
        )
        ckpts.append(lmpress.save(res, root / f"ckpt-{scheme}"))
    return Inputs(Path(tiny_llama_dir), *ckpts)


def outcome(tmp: Path, inp: Inputs, c: Case, capsys) -> tuple[int, str]:
    """Run ``c``; its exit status and the error's first line, paths shown relative."""
    argv = [str(a) for a in c.make(tmp, inp)]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("lmpress:")]
    line = lines[0] if lines else ""
    for root, label in ((tmp, ""), (inp.tiny, "tiny/"), (inp.ckpt.parent, "")):
        line = line.replace(str(root) + "/", label)
    line = re.sub(r"/\S*/site-packages/\S+", "<package>", line)
    for pattern, fixed in MACHINE_DEPENDENT:
        line = re.sub(pattern, fixed, line)
    return code, line


# Figures of the machine the table was made on, written as symbols.
MACHINE_DEPENDENT = [
    (r"this machine has \d+ cores; give at most \d+", "this machine has N cores; give at most 4N"),
    (r"more than the [\d.]+ GiB available", "more than the M GiB available"),
]


RESULTS: dict[str, tuple[int, str]] = {}


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input(c: Case, tmp_path, inputs, capsys):
    code, line = outcome(tmp_path, inputs, c, capsys)
    RESULTS[c.name] = (code, line)
    assert code == c.code, line
    assert c.needle in line, line
    if code:
        assert "unexpected" not in line and "Traceback" not in line
    if c.after is not None:
        c.after(tmp_path)


def render(results: dict[str, tuple[int, str]]) -> str:
    rows = [
        "# What lmpress does with bad inputs",
        "",
        "Each row is a case of `tests/test_robustness.py`: an input built to be wrong",
        "(or an interruption), the command's exit status, and the first line it printed.",
        "The tests regenerate this table (`LMPRESS_WRITE_ROBUSTNESS=1 pytest",
        "tests/test_robustness.py`) and fail when it is out of date.",
        "",
        "| issue point | case | exit | what lmpress says |",
        "|---|---|---|---|",
    ]
    for c in CASES:
        code, line = results[c.name]
        said = line.replace("|", "\\|") or "(succeeds)"
        rows.append(
            f"| {c.point} | {c.what} | {code} | `{said}` |"
            if line
            else f"| {c.point} | {c.what} | {code} | {said} |"
        )
    for point, what, code, said in SIGNAL_ROWS:
        rows.append(f"| {point} | {what} | {code} | {said} |")
    return "\n".join(rows) + "\n"


SIGNAL_ROWS = [
    (
        8,
        "SIGTERM while a checkpoint is being written (temporary directory in place)",
        143,
        "`lmpress: terminated; no partial output was left`; the temporary directory is removed",
    ),
    (
        8,
        "SIGTERM during `quantize` (a child process, mid-run)",
        143,
        "`lmpress: terminated; no partial output was left`; no output, no temporary",
    ),
    (
        8,
        "Ctrl-C 0.5 s, 1 s, 2 s after `lmpress quantize` starts (imports)",
        130,
        "`lmpress: interrupted; no partial output was left`, one line, no traceback",
    ),
    (
        8,
        "SIGKILL while writing: the next run on the same output",
        0,
        "removes the dead run's `.NAME.tmp-PID-*` (row above: stale temporary)",
    ),
]


def test_the_table_is_current():
    if len(RESULTS) != len(CASES):
        pytest.skip("run with the whole of test_bad_input")
    text = render(RESULTS)
    if os.environ.get("LMPRESS_WRITE_ROBUSTNESS"):
        TABLE.write_text(text)
    assert TABLE.is_file() and TABLE.read_text() == text, (
        "docs/robustness.md is out of date; rewrite it with "
        "LMPRESS_WRITE_ROBUSTNESS=1 pytest tests/test_robustness.py"
    )


# -- interruptions: real signals to real processes ------------------------------------


def _lmpress(*argv, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmpress.cli", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_sigterm_while_writing_removes_the_temporary(tmp_path):
    out = tmp_path / "out"
    code = f"""
import os, signal, sys, time
from lmpress.cli import _on_sigterm, Terminated
from lmpress.outputs import atomic_output
signal.signal(signal.SIGTERM, _on_sigterm)
try:
    with atomic_output({str(out)!r}, overwrite=False) as tmp:
        (tmp / "half").write_text("x")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
except Terminated:
    sys.exit(143)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_sigterm_mid_quantize(tmp_path, tiny_llama_dir):
    p = _lmpress(
        "quantize",
        tiny_llama_dir,
        "-o",
        tmp_path / "q",
        "--method",
        "learned-round",
        "--calib",
        _calib(tmp_path),
        "--calib-samples",
        "16",
        "--calib-seq-len",
        "128",
        "--scheme",
        "w4g32",
    )
    seen = ""
    deadline = time.time() + 120
    while "quantize (" not in seen and time.time() < deadline and p.poll() is None:
        seen += p.stderr.read(1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, seen + err
    assert "terminated" in err and "Traceback" not in err
    assert [x.name for x in tmp_path.iterdir()] == ["calib.txt"]


@pytest.mark.parametrize("delay", [0.5, 1.0, 2.0])
def test_ctrl_c_while_starting(tmp_path, delay):
    p = _lmpress("quantize", "smollm2-135m", "-o", tmp_path / "q", "--quiet")
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.strip().splitlines() == ["lmpress: interrupted; no partial output was left"]
    assert not (tmp_path / "q").exists()
