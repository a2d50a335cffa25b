"""Evaluation results are records whose JSON rows keep the keys (and order) they always had."""

import dataclasses
import math

import pytest

from lmpress.eval.loglik import TaskResult
from lmpress.eval.perplexity import AgreementStats, PerplexityResult, PplRatio
from lmpress.eval.result import EvalResult
from lmpress.eval.rolling import RollingPerplexityResult
from lmpress.eval.size import SizeStats
from lmpress.eval.speed import SpeedResult

# The keys of the rows as `lmpress eval --json`, results.jsonl and the benchmark scripts
# read them, in the order the dict-returning evaluators wrote them before the records.
PPL_KEYS = (
    "ppl nll_per_token ctx windows first_scored tokens_scored window_nll window_tokens eval_seconds"
).split()
AGREEMENT_KEYS = (
    "kl_mean kl_stderr kl_median kl_p99 kl_p999 kl_max top1_agreement top1_stderr "
    "delta_p_mean delta_p_stderr delta_p_rms positions"
).split()
RATIO_KEYS = "ln_ppl_ratio ln_ppl_ratio_stderr ln_ppl_ratio_stderr_windows".split()
SIZE_KEYS = (
    "quantized_modules quantized_weights bits_per_weight bits_per_weight_model "
    "stored_bytes_estimate size_bytes weights_file_bytes"
).split()
ROLLING_KEYS = (
    "convention word_perplexity byte_perplexity bits_per_byte token_perplexity "
    "documents words bytes tokens max_length"
).split()
SPEED_KEYS = (
    "engine prompt_tokens new_tokens reps prefill_tokens_per_s decode_tokens_per_s "
    "load_s peak_rss_mb"
).split()


def _ppl(with_base: bool = False) -> PerplexityResult:
    agreement = AgreementStats(**{k: 0.5 for k in AGREEMENT_KEYS[:-1]}, positions=126)
    ratio = PplRatio(
        ln_ppl_ratio=0.01, ln_ppl_ratio_stderr=0.002, ln_ppl_ratio_stderr_windows=0.003
    )
    return PerplexityResult(
        ppl=20.0,
        nll_per_token=math.log(20.0),
        ctx=64,
        windows=2,
        first_scored=0,
        tokens_scored=126,
        window_nll=[180.0, 197.0],
        window_tokens=[63, 63],
        eval_seconds=0.1,
        agreement=agreement if with_base else None,
        ratio=ratio if with_base else None,
    )


def _size(directory: bool = True) -> SizeStats:
    files = {"size_bytes": 1000, "weights_file_bytes": 900} if directory else {}
    return SizeStats(
        quantized_modules=14,
        quantized_weights=4096,
        bits_per_weight=4.3,
        bits_per_weight_model=9.1,
        stored_bytes_estimate=950,
        **files,
    )


def _piqa() -> TaskResult:
    return TaskResult(
        n=2,
        acc=0.5,
        acc_stderr=0.5,
        acc_norm=1.0,
        acc_norm_stderr=0.0,
        predictions_norm=[0, 1],
        predictions=[0, 0],
    )


def test_perplexity_row_inlines_the_agreement_with_the_base():
    assert list(_ppl().to_dict()) == PPL_KEYS
    row = _ppl(with_base=True).to_dict()
    assert list(row) == PPL_KEYS + AGREEMENT_KEYS + RATIO_KEYS
    assert row["positions"] == 126 and row["window_tokens"] == [63, 63]


def test_optional_figures_are_left_out_and_required_ones_kept_as_null():
    assert list(_size().to_dict()) == SIZE_KEYS
    float_model = dataclasses.replace(_size(directory=False), bits_per_weight=None)
    row = float_model.to_dict()
    assert list(row) == SIZE_KEYS[:-2] and row["bits_per_weight"] is None
    speed = SpeedResult(
        engine="lmpress",
        prompt_tokens=20,
        new_tokens=4,
        reps=1,
        prefill_tokens_per_s=1e4,
        decode_tokens_per_s=4e3,
    )
    assert list(speed.to_dict()) == SPEED_KEYS[:-2]
    measured = dataclasses.replace(speed, load_s=0.2, peak_rss_mb=600.0)
    assert list(measured.to_dict()) == SPEED_KEYS
    # the subprocess hands its row back as JSON: the row rebuilds the record
    assert SpeedResult(**measured.to_dict()) == measured


def test_task_rows_per_kind_of_task():
    assert list(_piqa().to_dict()) == [
        "n",
        "acc",
        "acc_stderr",
        "acc_norm",
        "acc_norm_stderr",
        "predictions_norm",
        "predictions",
    ]
    lambada = TaskResult(n=2, acc=0.0, acc_stderr=0.0, ppl=9.0, ppl_stderr=1.0, predictions=[0, 0])
    assert list(lambada.to_dict()) == ["n", "acc", "acc_stderr", "ppl", "ppl_stderr", "predictions"]
    assert list(lambada.scores()) == ["acc", "ppl"] and lambada.scores()["ppl"] == (9.0, 1.0)
    assert _piqa().to_dict(predictions=False) == {
        "n": 2,
        "acc": 0.5,
        "acc_stderr": 0.5,
        "acc_norm": 1.0,
        "acc_norm_stderr": 0.0,
    }


def test_eval_rows_of_each_convention():
    checkpoint = EvalResult(
        perplexity=_ppl(with_base=True),
        convention="gptq",
        text="wikitext2",
        size=_size(),
        peak_rss_mb=600.0,
        quantize_seconds=1.5,
        lmpress_version="0.1.0",
    )
    assert list(checkpoint.to_dict()) == (
        PPL_KEYS
        + AGREEMENT_KEYS
        + RATIO_KEYS
        + ["convention", "text"]
        + SIZE_KEYS
        + ["peak_rss_mb", "quantize_seconds", "lmpress_version"]
    )
    # an old checkpoint whose run info lacks the timing still says so
    old = dataclasses.replace(checkpoint, quantize_seconds=None).to_dict()
    assert "quantize_seconds" in old and old["quantize_seconds"] is None
    float_model = EvalResult(
        perplexity=_ppl(), convention="llamacpp", text="t.txt", size=_size(), peak_rss_mb=600.0
    )
    assert list(float_model.to_dict()) == PPL_KEYS + ["convention", "text"] + SIZE_KEYS + [
        "peak_rss_mb"
    ]
    rolling = RollingPerplexityResult(
        word_perplexity=30.0,
        byte_perplexity=1.9,
        bits_per_byte=0.93,
        token_perplexity=20.0,
        documents=1,
        words=100,
        bytes=600,
        tokens=150,
        max_length=64,
    )
    lm_eval = EvalResult(
        perplexity=rolling, convention="lm-eval", text="wikitext2", size=_size(), peak_rss_mb=600.0
    ).to_dict()
    assert list(lm_eval) == ROLLING_KEYS + ["text"] + SIZE_KEYS + ["peak_rss_mb"]
    assert lm_eval["convention"] == "lm-eval"


def test_tasks_compose_with_or_without_perplexity():
    only = EvalResult(tasks={"piqa": _piqa()}).to_dict()
    assert list(only) == ["tasks"] and only["tasks"]["piqa"]["predictions"] == [0, 0]
    both = EvalResult(
        perplexity=_ppl(),
        convention="gptq",
        text="t",
        size=_size(),
        peak_rss_mb=1.0,
        tasks={"piqa": _piqa()},
    ).to_dict()
    assert list(both)[-1] == "tasks" and list(both)[:9] == PPL_KEYS
    assert EvalResult().to_dict() == {}


def test_results_are_frozen():
    """No figure is patched onto a result after the evaluator made it."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        _ppl().ppl = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        EvalResult().tasks = {}  # type: ignore[misc]
