"""Checks on inputs: finite tensors, layer counts, scale ranges, sizes."""

import pytest
import torch
from conftest import tiny_model

from lmpress.errors import LmpressError


def test_non_finite_tensors_are_named():
    from lmpress.models.checks import check_finite_state

    m = tiny_model("llama")
    check_finite_state(m, "tiny")
    with torch.no_grad():
        m.model.layers[1].mlp.down_proj.weight[3, 4] = float("inf")
    with pytest.raises(LmpressError, match=r"model.layers.1.mlp.down_proj.weight holds 1 NaN/Inf"):
        check_finite_state(m, "tiny")


def test_save_refuses_a_non_finite_quantized_model(tmp_path):
    import lmpress

    res = lmpress.quantize(tiny_model("llama"), {"method": "rtn", "scheme": "w4g32"}, calib=None)
    q = res.model.model.layers[0].self_attn.q_proj
    q.scales[0, 0] = float("nan")
    with pytest.raises(LmpressError, match=r"q_proj.scales holds 1 NaN/Inf"):
        lmpress.save(res, tmp_path / "q")
    assert list(tmp_path.iterdir()) == []


def test_layer_count_from_names():
    from lmpress.models.checks import check_layer_count, layer_count

    assert layer_count(["model.layers.0.a", "model.layers.11.b", "lm_head.weight"]) == 12
    assert layer_count(["transformer.h.3.attn.c_attn.weight"]) == 4
    assert layer_count(["blk.29.attn_q.weight", "token_embd.weight"]) == 30
    assert layer_count(["lm_head.weight"]) is None
    check_layer_count(12, 12, "c", "num_hidden_layers")
    for declared, needle in [(13, "says num_hidden_layers=13"), (None, "lacks"), ("2", "positive")]:
        with pytest.raises(LmpressError, match=needle):
            check_layer_count(declared, 12, "c", "num_hidden_layers")


@pytest.mark.parametrize(
    "scheme,factor,needle",
    [
        ("w4g32", 1e7, "exceed fp16's largest value 65504; quantize it as w4g32:bf16"),
        ("w4g32s", 1e7, "exceed fp16's largest value"),
        ("w8", 1e8, "exceed fp16's largest"),
        ("w4g32", 1e-8, "fall below fp16's smallest value"),
        ("w4g32:bf16", 1e7, None),
        ("w4g32", 1.0, None),
    ],
)
def test_scales_that_their_dtype_cannot_hold(scheme, factor, needle):
    from lmpress.formats.scheme import parse_scheme

    torch.manual_seed(0)
    w = torch.randn(8, 64) * 0.05 * factor
    problem = parse_scheme(scheme).fmt.storage_problem(w)
    if needle is None:
        assert problem is None
    else:
        assert needle in problem


def test_one_tiny_group_among_normal_ones_is_fine():
    """A group of near-zero weights beside normal ones decodes to about 0 either way."""
    from lmpress.formats.scheme import parse_scheme

    w = torch.randn(8, 64) * 0.05
    w[0, :32] = 1e-12
    assert parse_scheme("w4g32").fmt.storage_problem(w) is None


def test_threads_are_bounded():
    import os

    from lmpress.models.checks import MAX_THREADS_PER_CORE, check_threads

    n = (os.cpu_count() or 1) * MAX_THREADS_PER_CORE
    assert check_threads(n) == n
    with pytest.raises(LmpressError, match="give at most"):
        check_threads(n + 1)


def test_generate_no_stream_keeps_the_text_of_a_failed_run(capsys, monkeypatch):
    import lmpress.runtime
    from lmpress.cli import main

    def failing(*args, on_text=None, **kw):
        on_text("Once upon")
        on_text(" a time")
        raise RuntimeError("the decoder broke")

    monkeypatch.setattr(lmpress.runtime, "generate", failing)
    code = main(["generate", "x", "--prompt", "hi", "--no-stream", "--quiet"])
    cap = capsys.readouterr()
    assert code == 1
    assert "Once upon a time" in cap.out
