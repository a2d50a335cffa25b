"""GuidedQuant's end-loss guidance: the saliency, the per-row-group GPTQ, the pipeline."""

import pytest
import torch
import torch.nn.functional as F
from conftest import layer_inputs, needs_data, needs_smollm2, tiny_model

from lmpress.errors import LmpressError
from lmpress.formats.scheme import parse_scheme
from lmpress.guidance import output_row_groups, output_saliency
from lmpress.methods import get_method
from lmpress.pipeline import quantize_model
from lmpress.recipe import Recipe


def test_row_groups_cover_every_row_once():
    for n, g in [(576, 4), (192, 5), (7, 7), (10, 3)]:
        rows = output_row_groups(n, g)
        assert len(rows) == g
        assert [r for s in rows for r in range(n)[s]] == list(range(n))
        sizes = {s.stop - s.start for s in rows}
        assert max(sizes) - min(sizes) <= 1


def test_saliency_is_the_squared_loss_gradient_of_each_output_group():
    model = tiny_model("llama")
    ids = torch.randint(0, 512, (3, 16), generator=torch.Generator().manual_seed(0))
    name = "model.layers.1.mlp.up_proj"
    sal = output_saliency(model, {name: 3}, ids, batch_size=2, progress=False)[name]
    assert sal.shape == (3 * 16, 3)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())

    outs = []
    h = model.get_submodule(name).register_forward_hook(lambda _m, _a, o: outs.append(o))
    try:
        logits = model(ids, use_cache=False).logits
    finally:
        h.remove()
    z = outs[0]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 512), ids[:, 1:].reshape(-1), reduction="sum")
    (g,) = torch.autograd.grad(loss, z)
    g2 = g.reshape(-1, g.shape[-1]).square()
    want = torch.stack([g2[:, s].mean(1) for s in output_row_groups(g2.shape[1], 3)], 1)
    torch.testing.assert_close(sal, want, rtol=1e-4, atol=1e-12)
    assert sal.reshape(3, 16, 3)[:, -1].abs().max() == 0  # the last token predicts nothing


def _guided_error(w, x, s, dq):
    """sum_t sum_j s[t, group(j)] ((W - Q) x_t)_j^2 / n: the objective guidance minimises."""
    e = (x @ (w - dq).T).square()
    total = 0.0
    for k, rows in enumerate(output_row_groups(w.shape[0], s.shape[1])):
        total += (e[:, rows] * s[:, k : k + 1]).sum().item()
    return total / x.shape[0]


@needs_smollm2
@needs_data
@pytest.mark.parametrize("method", ["gptq", "leanquant"])
def test_guided_gptq_cuts_the_end_loss_weighted_error_on_a_real_layer(smollm2, method):
    """With real end-loss gradients, the guided run must beat plain GPTQ on the guided
    objective clearly (it would not if ``guided`` silently fell back to one Hessian)."""
    from lmpress.calibration import calibration_ids

    name, g = "model.layers.5.self_attn.o_proj", 4
    ids = calibration_ids(smollm2.tokenizer, "wikitext2", 4, 256, seed=1)
    s = output_saliency(smollm2.model, {name: g}, ids, progress=False)[name]
    w, x = layer_inputs(smollm2, name)  # the same 4 x 256 calibration tokens as ids
    H = x.T @ x / x.shape[0]
    Hg = torch.stack([(x * s[:, k : k + 1]).T @ x / x.shape[0] for k in range(g)])
    scheme = parse_scheme("w3g64")
    fn = get_method(method).fn

    def dq(r):
        return r.packed(scheme).dequantize()

    plain = _guided_error(w, x, s, dq(fn(w, scheme, H)))
    guided = _guided_error(w, x, s, dq(fn(w, scheme, Hg, guided=g)))
    assert guided < 0.9 * plain, (guided, plain)


def test_guided_needs_its_hessians_and_row_scales():
    w = torch.randn(8, 32)
    h = torch.eye(32)
    with pytest.raises(LmpressError, match=r"guided=2 needs 2 end-loss-weighted Hessians"):
        get_method("gptq").fn(w, parse_scheme("w4g16"), h, guided=2)
    with pytest.raises(LmpressError, match="per-channel or grouped scales"):
        get_method("gptq").fn(w, parse_scheme("w4gt"), torch.stack([h, h]), guided=2)


def test_pipeline_runs_guided_gptq_and_it_changes_the_codes():
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    codes = {}
    for guided, samples in ((0, 0), (2, 0), (2, 2)):
        model = tiny_model("llama")
        args = {"guided": guided, "guided_samples": samples}
        res = quantize_model(model, Recipe("gptq", "w3g16", method_args=args), ids, 2, False)
        assert set(res.layer_errors) == set(res.packed)
        codes[guided, samples] = {n: p.codes() for n, p in res.packed.items()}
    for other in ((2, 0), (2, 2)):  # guidance, and guidance from half the samples
        changed = [not torch.equal(codes[0, 0][n], codes[other][n]) for n in codes[0, 0]]
        assert sum(changed) >= len(changed) // 2, other
