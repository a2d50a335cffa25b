import pytest
import torch
from conftest import tiny_model

from lmpress.errors import LmpressError
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe


def test_true_sequential_groups():
    from lmpress.models.arch import find_layout
    from lmpress.pipeline import _capture_block_inputs, _input_groups

    model = tiny_model("llama")
    layout = find_layout(model)
    batches = _capture_block_inputs(model, layout, torch.randint(0, 512, (2, 16)), 2)
    groups = _input_groups(layout.blocks[0], layout.linear_names[0], batches[0])
    assert groups == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]


def test_gram_upper_equals_full():
    from lmpress.pipeline import _add_gram_upper

    x = torch.randn(300, 700, generator=torch.Generator().manual_seed(0))
    H = torch.zeros(700, 700)
    _add_gram_upper(H, x)
    H = torch.triu(H) + torch.triu(H, diagonal=1).T
    assert torch.allclose(H, x.T @ x, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
def test_fast_propagation_matches_full_pass(family):
    """The linear-correction shortcut gives the block outputs a full pass would."""
    ids = torch.randint(0, 512, (8, 32), generator=torch.Generator().manual_seed(0))
    a, b = tiny_model(family), tiny_model(family)
    ra = quantize_model(a, Recipe(method="gptq", scheme="w4g32"), ids, batch_size=4, progress=False)
    import lmpress.pipeline as pl

    orig = pl._outputs_by_linear_correction

    def full_only(block, batches, *_):
        return [pl.block_output(block(h, **kw)) for h, kw in batches], False

    pl._outputs_by_linear_correction = full_only
    try:
        rb = quantize_model(
            b, Recipe(method="gptq", scheme="w4g32"), ids, batch_size=4, progress=False
        )
    finally:
        pl._outputs_by_linear_correction = orig
    if family == "llama":
        assert ra.fast_propagation_blocks == 1  # every block but the last, which needs no outputs
    assert rb.fast_propagation_blocks == 0
    with torch.no_grad():
        la, lb = a(ids[:2]).logits, b(ids[:2]).logits
    assert torch.allclose(la, lb, atol=1e-3 * lb.abs().max())


def test_per_layer_arguments_are_refused():
    """Sliding-window layers get other masks than block 0: calibration must refuse, not guess."""
    from conftest import tiny_config
    from transformers import Qwen2ForCausalLM

    cfg = tiny_config("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    if len(set(getattr(model.config, "layer_types", []) or [])) < 2:
        pytest.skip("this transformers version gives every layer the same attention")
    ids = torch.randint(0, 512, (4, 16))
    with pytest.raises(LmpressError, match="different arguments"):
        quantize_model(model, Recipe(method="gptq", scheme="w4g32"), ids, progress=False)
