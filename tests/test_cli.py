"""Errors a user can cause: one line, non-zero exit, no output directory."""

import json
import re

import pytest
import torch
from conftest import needs_data, tiny_model

from lmpress.cli import main


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("lmpress: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_model_path(capsys, tmp_path):
    code, _, err = run(capsys, "quantize", tmp_path / "nope", "-o", tmp_path / "o")
    assert_user_error(code, err, "does not exist")
    assert not (tmp_path / "o").exists()


def test_unsupported_architecture(capsys, tmp_path):
    from transformers import T5Config

    d = tmp_path / "t5"
    d.mkdir()
    T5Config().save_pretrained(d)
    code, _, err = run(capsys, "quantize", d, "-o", tmp_path / "o")
    assert_user_error(code, err, "t5", "not a decoder-only")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--scheme", "w4g0"], "group size"),
        (["--scheme", "w4g-8"], "group size must be a positive integer"),
        (["--scheme", "w7g64"], "bits=7"),
        (["--scheme", "w16"], "bits=16"),
        (["--scheme", "q4_k"], "cannot parse scheme"),
        (["--method", "awqq"], "unknown method"),
        (["--scheme", "w4g100000"], "larger than the input dimension"),
        (["--override", "down_proj"], "REGEX=SCHEME"),
        (["--override", "(=w8"], "not a valid regex"),
    ],
)
def test_bad_quantize_args(capsys, tmp_path, tiny_llama_dir, args, needle):
    code, _, err = run(capsys, "quantize", tiny_llama_dir, "-o", tmp_path / "o", *args)
    assert_user_error(code, err, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "calib,needle", [("empty.txt", "empty"), ("missing.txt", "neither a file nor a known dataset")]
)
def test_bad_calibration_text(capsys, tmp_path, tiny_llama_dir, calib, needle):
    (tmp_path / "empty.txt").write_text("\n \n")
    args = ["--method", "gptq", "--calib", tmp_path / calib, "--calib-seq-len", "128"]
    args += ["-o", tmp_path / "o"]
    code, _, err = run(capsys, "quantize", tiny_llama_dir, *args)
    assert_user_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_output_exists(capsys, tmp_path, tiny_llama_dir):
    (tmp_path / "o").mkdir()
    code, _, err = run(capsys, "quantize", tiny_llama_dir, "-o", tmp_path / "o")
    assert_user_error(code, err, "already exists", "--overwrite")


def test_info_on_non_checkpoint(capsys, tiny_llama_dir, tmp_path):
    code, _, err = run(capsys, "info", tiny_llama_dir)
    assert_user_error(code, err, "not an lmpress checkpoint")
    code, _, err = run(capsys, "info", tmp_path / "nothing")
    assert_user_error(code, err, "does not exist")


@needs_data
def test_tiny_llama_end_to_end(capsys, tmp_path, tiny_llama_dir):
    """quantize (gptq, real calibration text) -> info -> eval with KL, on a tiny random Llama."""
    out = tmp_path / "q"
    code, stdout, err = run(
        capsys,
        "quantize",
        tiny_llama_dir,
        "--method",
        "gptq",
        "--scheme",
        "w4g32",
        "--override",
        "down_proj=w8",
        "--calib-samples",
        "4",
        "--calib-seq-len",
        "64",
        "--quiet",
        "-o",
        out,
    )
    assert code == 0, err
    assert "saved" in stdout
    code, stdout, _ = run(capsys, "info", out, "--json")
    info = json.loads(stdout)
    assert code == 0
    assert info["method"] == "gptq"
    assert info["schemes"] == {"w4g32": 12, "w8": 2}
    for key in ("bits_per_weight", "bits_per_weight_model", "size_bytes"):
        assert info[key] > 0
    res_file = tmp_path / "r.json"
    code, stdout, err = run(
        capsys,
        "eval",
        out,
        "--ctx",
        "128",
        "--windows",
        "2",
        "--base",
        tiny_llama_dir,
        "--json",
        res_file,
        "--quiet",
    )
    assert code == 0, err
    res = json.loads(res_file.read_text())
    assert res["windows"] == 2 and res["ctx"] == 128
    assert res["kl_mean"] >= 0 and 0 <= res["top1_agreement"] <= 1


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--batch-size", "0"], "positive integer"),
        (["--calib-samples", "-3"], "positive integer"),
    ],
)
def test_bad_numbers_are_usage_errors(capsys, tmp_path, tiny_llama_dir, args, needle):
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(tiny_llama_dir), "-o", str(tmp_path / "o"), *args])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--method", "gptq", "--damp", "-1"], "out of range"),
        (["--override", "lm_head=w8"], "matches no quantizable module"),
        (["--json", "/nonexistent-dir/x.json"], "does not exist"),
    ],
)
def test_bad_options_fail_before_work(capsys, tmp_path, tiny_llama_dir, args, needle):
    code, _, err = run(capsys, "quantize", tiny_llama_dir, "-o", tmp_path / "o", *args)
    assert_user_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_output_is_a_file(capsys, tmp_path, tiny_llama_dir):
    (tmp_path / "o").write_text("x")
    code, _, err = run(capsys, "quantize", tiny_llama_dir, "-o", tmp_path / "o", "--overwrite")
    assert_user_error(code, err, "is a file")


def test_eval_rejects_negative_windows(capsys, tiny_llama_dir):
    with pytest.raises(SystemExit):
        main(["eval", str(tiny_llama_dir), "--windows", "-1"])


def test_ctx_beyond_model_positions(capsys, tiny_llama_dir):
    code, _, err = run(capsys, "eval", tiny_llama_dir, "--ctx", "100000", "--windows", "1")
    assert_user_error(code, err, "exceeds the model's")


def test_bin_checkpoint_loads(tmp_path, smol_tokenizer):
    """A HF directory with pytorch_model.bin (loaded weights-only) quantizes like safetensors."""
    from lmpress.models.load import load_model

    d = tmp_path / "bin-model"
    m = tiny_model("llama", vocab=len(smol_tokenizer))
    m.save_pretrained(d)
    (d / "model.safetensors").unlink()  # transformers 5 writes only safetensors
    torch.save(m.state_dict(), d / "pytorch_model.bin")
    smol_tokenizer.save_pretrained(d)
    assert (d / "pytorch_model.bin").is_file()
    loaded = load_model(str(d))
    assert torch.equal(
        loaded.model.model.layers[0].mlp.up_proj.weight, m.model.layers[0].mlp.up_proj.weight
    )


def test_method_args_from_cli(capsys, tmp_path, tiny_llama_dir):
    code, _, err = run(
        capsys,
        "quantize",
        tiny_llama_dir,
        "--method-arg",
        "mse=true",
        "--quiet",
        "-o",
        tmp_path / "o",
    )
    assert code == 0, err
    qc = json.loads((tmp_path / "o" / "config.json").read_text())["quantization_config"]
    assert qc["recipe"]["method_args"] == {"mse": True}
    code, _, err = run(
        capsys, "quantize", tiny_llama_dir, "--method-arg", "mse", "-o", tmp_path / "p"
    )
    assert_user_error(code, err, "KEY=VALUE")
    code, _, err = run(
        capsys, "quantize", tiny_llama_dir, "--method-arg", "mse=3", "-o", tmp_path / "p"
    )
    assert_user_error(code, err, "must be a bool")


@needs_data
def test_presets_and_combinations_from_cli(capsys, tmp_path, tiny_llama_dir):
    code, out, err = run(
        capsys, "quantize", tiny_llama_dir, "--preset", "fast", "--quiet", "-o", tmp_path / "f"
    )
    assert code == 0, err
    qc = json.loads((tmp_path / "f" / "config.json").read_text())["quantization_config"]
    assert qc["recipe"]["method"] == "rtn" and qc["calibration"] is None
    code, out, err = run(
        capsys,
        "quantize",
        tiny_llama_dir,
        "--preset",
        "best-3bit",
        "--scheme",
        "w3g32",
        "--calib-samples",
        "4",
        "--calib-seq-len",
        "32",
        "--quiet",
        "-o",
        tmp_path / "b",
    )
    assert code == 0, err
    qc = json.loads((tmp_path / "b" / "config.json").read_text())["quantization_config"]
    assert qc["recipe"]["method"] == "learned-round"
    assert qc["recipe"]["scheme"]["group_size"] == 32
    code, out, err = run(
        capsys,
        "quantize",
        tiny_llama_dir,
        "--method",
        "awq+gptq",
        "--calib-samples",
        "4",
        "--calib-seq-len",
        "32",
        "--quiet",
        "-o",
        tmp_path / "c",
    )
    assert code == 0, err
    code, out, err = run(capsys, "info", tmp_path / "c")
    assert code == 0 and "awq+gptq" in out
    code, _, err = run(
        capsys, "quantize", tiny_llama_dir, "--preset", "best-1bit", "-o", tmp_path / "x"
    )
    assert_user_error(code, err, "unknown preset", "best-4bit")
    (tmp_path / "r.yaml").write_text("method: rtn\n")
    code, _, err = run(
        capsys,
        "quantize",
        tiny_llama_dir,
        "--preset",
        "fast",
        "--recipe",
        tmp_path / "r.yaml",
        "-o",
        tmp_path / "x",
    )
    assert_user_error(code, err, "not both")
    code, _, err = run(
        capsys, "quantize", tiny_llama_dir, "--method", "awq+hqqq", "-o", tmp_path / "x"
    )
    assert_user_error(code, err, "unknown method 'hqqq'")
    assert not (tmp_path / "x").exists()


@needs_data
def test_eval_tasks_from_cli(capsys, tmp_path, tiny_llama_dir):
    out = tmp_path / "r.json"
    code, stdout, err = run(
        capsys,
        "eval",
        tiny_llama_dir,
        "--tasks",
        "piqa,winogrande",
        "--limit",
        "4",
        "--quiet",
        "--json",
        out,
    )
    assert code == 0, err
    res = json.loads(out.read_text())
    assert set(res["tasks"]) == {"piqa", "winogrande"} and "ppl" not in res
    assert res["tasks"]["piqa"]["n"] == 4 and "acc_norm" in res["tasks"]["piqa"]
    assert "acc_norm" not in res["tasks"]["winogrande"]
    assert "piqa: acc=" in stdout
    code, _, err = run(capsys, "eval", tiny_llama_dir, "--tasks", "piqaa")
    assert_user_error(code, err, "unknown task 'piqaa'")


def test_sweep_grid_is_resumable(capsys, tmp_path, tiny_llama_dir):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(f"Row {i}: a few words of text for the sweep." for i in range(200)))
    args = [
        "sweep",
        tiny_llama_dir,
        "-o",
        tmp_path / "s",
        "--schemes",
        "w4g32,w3g32",
        "--methods",
        "rtn,gptq:damp=0.05,mse=false",
        "--calib",
        text,
        "--calib-samples",
        "4",
        "--calib-seq-len",
        "32",
        "--ppl",
        text,
        "--ctx",
        "64",
        "--windows",
        "2",
        "--quiet",
        "--tasks",
        "piqa",
        "--limit",
        "3",
    ]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "s" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {r["method"] for r in rows} == {
        "float",
        "rtn",
        "gptq:damp=0.05,mse=false",
    }
    gptq = [r for r in rows if r["method"].startswith("gptq")][0]
    assert gptq["tasks"]["piqa"]["n"] == 3 and 0 <= gptq["task_mean_acc"] <= 1
    assert gptq["recipe"]["method_args"] == {"damp": 0.05, "mse": False}
    for r in rows:  # each cell measured alone in its own process
        sp = r["speed"]
        assert sp["prefill_tokens_per_s"] > 0 and sp["decode_tokens_per_s"] > 0, sp
        assert sp["peak_rss_mb"] > 100 and sp["new_tokens"] == 32
    assert {r["speed"]["engine"] for r in rows if r["method"] != "float"} == {"lmpress"}
    report = (tmp_path / "s" / "report.md").read_text()
    assert (
        "| gptq:damp=0.05,mse=false | w3g32 |" in report
        and (tmp_path / "s" / "pareto.png").is_file()
    )
    # every quantized row's perplexity ratio to the float model, with its spread
    assert all(r["window_nll"] and "ln_ppl_ratio_stderr_windows" in r for r in rows[1:])
    assert re.search(r"\| w3g32 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ ±[0-9.]+ \|", report)
    page = (tmp_path / "s" / "report.html").read_text()
    assert page.count("<img") >= 5 and "data:image/png;base64," in page and "</html>" in page
    assert "decode tok/s" in page and "| decode tok/s |" in report and "fresh process" in report
    assert all(r["command"].startswith("lmpress sweep ") and "--limit 3" in r["command"]
               for r in rows)  # fmt: skip
    assert rows[0]["versions"]["torch"] and "Commands that measured" in report
    assert "--calib-samples 4" in page and "transformers " in page
    assert not (tmp_path / "s" / "cells").exists() or not any((tmp_path / "s" / "cells").iterdir())
    code, out, err = run(capsys, *args)  # resumes: nothing new
    assert code == 0, err
    assert len((tmp_path / "s" / "results.jsonl").read_text().splitlines()) == 5
    code, _, err = run(
        capsys,
        "sweep",
        tiny_llama_dir,
        "-o",
        tmp_path / "x",
        "--schemes",
        "w4g32",
        "--methods",
        "rtn,gtpq",
    )
    assert_user_error(code, err, "unknown method 'gtpq'")


@needs_data
def test_eval_lm_eval_convention(capsys, tmp_path, tiny_llama_dir):
    out = tmp_path / "r.json"
    code, stdout, err = run(
        capsys, "eval", tiny_llama_dir, "--ppl-convention", "lm-eval", "--windows", "1",
        "--ctx", "128", "--quiet", "--json", out,
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["documents"] == 1 and res["max_length"] == 128
    assert res["word_perplexity"] > res["byte_perplexity"] > 1
    assert "word_perplexity=" in stdout and "lm-eval convention" in stdout
    code, _, err = run(
        capsys, "eval", tiny_llama_dir, "--ppl-convention", "lm-eval", "--base", tiny_llama_dir
    )
    assert_user_error(code, err, "not defined for --ppl-convention lm-eval")
    code, _, err = run(
        capsys, "eval", tiny_llama_dir, "--ppl-convention", "lm-eval", "--ctx", "100000"
    )
    assert_user_error(code, err, "exceeds the model's")


def test_weight_errors_recorded_and_plotted(tmp_path, tiny_llama_dir):
    """Calibration-free methods still say which modules lost the most (weight-space error)."""
    from lmpress.report.html import _layer_plot

    code = main(["quantize", str(tiny_llama_dir), "--method", "rtn", "--scheme", "w2g32",
                 "-o", str(tmp_path / "q"), "--quiet"])  # fmt: skip
    assert code == 0
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    werr = qc["weight_errors"]
    assert len(werr) == 14 and all(0 < v < 1 for v in werr.values())
    assert not qc["layer_errors"]
    uri = _layer_plot({"method": "rtn", "scheme": "w2g32", "weight_errors": werr})
    assert uri and uri.startswith("data:image/png;base64,")


def tiny_bpe_model(root):
    """A tiny random Llama with a 320-token byte-level BPE tokenizer trained on the spot,
    and that text: quick to load even from GGUF, where transformers rebuilds the
    tokenizer token by token (minutes' worth for the real model's 49k tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = [f"Row {i}: a few words of text about numbers and tests." for i in range(200)]
    text = root / "text.txt"
    text.write_text("\n".join(lines))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet
    )
    bpe.train_from_iterator(lines, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    d = root / "tiny-bpe"
    tiny_model("llama", vocab=len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    return d, text


# what a tqdm bar leaves on stderr: "NN%|" and a rate
PROGRESS_BAR = re.compile(r"\d+%\||it/s\]|s/it\]")


def test_quiet_silences_every_progress_bar(capfd, tmp_path):
    """lmpress's bars and transformers' (weight loading, GGUF dequantization) alike,
    for every command that has --quiet; the libraries' switches come back afterwards."""
    from transformers.utils import logging as tf_logging

    d, text = tiny_bpe_model(tmp_path)
    capfd.readouterr()  # saving the tiny model draws bars of its own
    q, gguf_file = tmp_path / "q", tmp_path / "m.gguf"
    window = ["--ppl", text, "--ctx", "32", "--windows", "1"]
    loud = main(list(map(str, ["eval", d, *window])))
    assert loud == 0 and PROGRESS_BAR.search(capfd.readouterr().err)  # the pattern sees bars
    bars_on = tf_logging.is_progress_bar_enabled()
    commands = [
        ["quantize", d, "-o", q],  # a HF directory: transformers' weight-loading bar
        ["export", q, "--to", "gguf", "-o", gguf_file],
        ["eval", gguf_file, *window],  # GGUF: transformers' dequantization bar
        ["eval", q, *window, "--base", d],  # the base model's logits
        ["sweep", d, "-o", tmp_path / "s", "--schemes", "w4g32", "--methods", "rtn",
         *window, "--no-speed"],
        ["generate", gguf_file, "--prompt", "a b", "--max-new-tokens", "2", "--no-stream"],
        ["info", q],
    ]  # fmt: skip
    for argv in commands:
        code = main(list(map(str, [*argv, "--quiet"])))
        err = capfd.readouterr().err
        assert code == 0, err
        assert not PROGRESS_BAR.search(err), (argv[0], err)
    assert tf_logging.is_progress_bar_enabled() == bars_on


def test_help_lists_what_the_registries_hold(capsys, monkeypatch):
    from lmpress.eval.tasks import TASKS
    from lmpress.export import EXPORTERS
    from lmpress.methods import METHODS
    from lmpress.presets import PRESETS
    from lmpress.transforms import TRANSFORMS

    monkeypatch.setenv("COLUMNS", "1000")  # no name broken at a hyphen across lines
    flags = [
        "--" + name.replace("_", "-")
        for fmt in EXPORTERS.names()
        for name in EXPORTERS.get(fmt).declared
    ]
    expected = {
        "quantize": METHODS.names() + TRANSFORMS.names() + PRESETS.names(),
        "eval": TASKS.names(),
        "sweep": METHODS.names() + TASKS.names(),
        "export": EXPORTERS.names() + flags,
    }
    for cmd, names in expected.items():
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert not [n for n in names if n not in out], (cmd, out)


@pytest.fixture
def toy_exporter(monkeypatch):
    """The exporters plus ``toy`` (options ``level`` 1-5 and ``loud``), which writes a file
    and records the options it was given."""
    import lmpress.export as export
    from lmpress.export import ExporterSpec, ExportOption
    from lmpress.registry import Registry

    seen: dict = {}

    def toy(model, tokenizer, out, options):
        seen.clear()
        seen.update(options)
        out.write_text("toy")
        return {"format": "toy", "quantized_modules": 0}

    reg = Registry("export format")
    for name in export.EXPORTERS.names():
        reg.register(name)(export.EXPORTERS.get(name))
    declared = {
        "level": ExportOption(3, "how hard", (1, 2, 3, 4, 5)),
        "loud": ExportOption(False, "say more"),
    }
    reg.register("toy")(ExporterSpec(toy, "a test format", declared, suffix=".toy"))
    monkeypatch.setattr(export, "EXPORTERS", reg)
    return seen


def test_export_flags_come_from_the_declared_options(capsys, tmp_path, toy_exporter):
    d, _ = tiny_bpe_model(tmp_path)
    out = tmp_path / "m.toy"
    toy = ["export", d, "--to", "toy", "-o", out, "--overwrite", "--quiet"]
    code, stdout, err = run(capsys, *toy, "--level", "4", "--loud", "true")
    assert code == 0, err
    seen = toy_exporter
    assert (seen["level"], seen["loud"], seen["progress"]) == (4, True, False)
    assert seen["source_model"] == str(d) and "wrote" in stdout and out.read_text() == "toy"
    code, _, err = run(capsys, *toy, "--export-arg", "level=2")
    assert code == 0, err
    assert seen["level"] == 2 and seen["loud"] is False  # the declared default
    code, _, err = run(capsys, *toy, "--export-arg", "level=9")
    assert_user_error(code, err, "level=9", "one of 1, 2, 3, 4, 5")
    code, _, err = run(capsys, *toy, "--export-arg", "depth=1")
    assert_user_error(code, err, "unknown option(s) ['depth']", "allowed: ['level', 'loud']")
    code, _, err = run(capsys, *toy, "--export-arg", "level")
    assert_user_error(code, err, "KEY=VALUE")
    # another format's flag is refused by the format asked for, before any work
    gguf_file = tmp_path / "m.gguf"
    code, _, err = run(capsys, "export", d, "--to", "gguf", "-o", gguf_file, "--scale-dtype",
                       "float32")  # fmt: skip
    assert_user_error(code, err, "unknown option(s) ['scale_dtype'] for export format 'gguf'")
    assert not gguf_file.exists()
    with pytest.raises(SystemExit):  # declared choices are the flag's choices too
        main(list(map(str, [*toy, "--level", "7"])))
    assert "invalid choice" in capsys.readouterr().err


def test_export_keeps_its_flags(capsys, tmp_path):
    """The flags export has always had, now generated from the exporters' declarations."""
    d, _ = tiny_bpe_model(tmp_path)
    q = tmp_path / "q"
    # groups of 48 straddle ggml's 32-weight blocks: every module takes the fallback type
    code, _, err = run(capsys, "quantize", d, "--scheme", "w4g48", "-o", q, "--quiet")
    assert code == 0, err
    summary = tmp_path / "gguf.json"
    code, _, err = run(capsys, "export", q, "--to", "gguf", "-o", tmp_path / "m.gguf",
                       "--embed-type", "f32", "--fallback-type", "q4_0", "--quiet",
                       "--json", summary)  # fmt: skip
    assert code == 0, err
    s = json.loads(summary.read_text())
    assert s["tensor_types"] == {"Q4_0": 14} and s["tensors"]["token_embd.weight"]["type"] == "F32"
    code, _, err = run(capsys, "export", q, "--to", "compressed-tensors", "-o", tmp_path / "ct",
                       "--scale-dtype", "float32", "--quiet", "--json", summary)  # fmt: skip
    assert code == 0, err
    assert json.loads(summary.read_text())["scale_dtype"] == "float32"
