"""Errors a user can cause: one line, non-zero exit, no output directory."""

import json
import re

import pytest
import torch
from conftest import needs_data

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
    args = ["--method", "gptq", "--calib", tmp_path / calib, "-o", tmp_path / "o"]
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
    from conftest import tiny_model

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
