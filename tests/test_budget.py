"""The bit-budget allocator: knapsack exactness, sensitivity statistics, recipes, CLI."""

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tiny_model

from lmpress.budget import allocate, knapsack
from lmpress.budget.sensitivity import ModuleStats, module_statistics, predicted_loss
from lmpress.cli import main
from lmpress.errors import LmpressError
from lmpress.pipeline import quantizable_linears
from lmpress.recipe import Recipe


def cli(*argv) -> int:
    return main(list(map(str, argv)))


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    items, options = 5, 3
    weights = (torch.rand(items, options, generator=g) * 10 + 1).tolist()
    costs = (torch.rand(items, options, generator=g) * 5).tolist()
    budget = float(sum(min(w) for w in weights) + 8 * torch.rand(1, generator=g))
    best = min(
        (sum(costs[i][c] for i, c in enumerate(pick)), pick)
        for pick in itertools.product(range(options), repeat=items)
        if sum(weights[i][c] for i, c in enumerate(pick)) <= budget
    )
    got = knapsack(costs, weights, budget, resolution=100000)
    assert sum(weights[i][c] for i, c in enumerate(got)) <= budget
    # optimal up to the rounding of weights to 1/100000 of the budget
    assert sum(costs[i][c] for i, c in enumerate(got)) <= best[0] + 1e-9


def test_knapsack_refuses_a_budget_below_the_lightest_choice():
    with pytest.raises(LmpressError, match="below the lightest"):
        knapsack([[1.0, 2.0]], [[5.0, 3.0]], 2.0)


def test_statistics_are_the_input_moments_and_squared_output_gradients():
    m = tiny_model("llama")
    m.model.layers[0].self_attn.q_proj.weight.requires_grad_(False)  # restored as it was
    ids = torch.randint(0, 512, (3, 16), generator=torch.Generator().manual_seed(0))
    name, k = "model.layers.1.mlp.down_proj", "model.layers.0.self_attn.k_proj"
    # two batches: the statistics accumulate across them
    st = module_statistics(m, [name, k, "model.layers.0.self_attn.q_proj"], ids, progress=False)
    assert all(p.grad is None for p in m.parameters())
    assert [p.requires_grad for p in m.parameters()].count(False) == 1
    assert m.training is False
    xs = {name: [], k: []}
    outs = {name: [], k: []}
    handles = []
    for n in (name, k):
        mod = m.get_submodule(n)
        handles.append(mod.register_forward_pre_hook(lambda _m, a, n=n: xs[n].append(a[0])))

        def keep(_m, _a, out, n=n):
            out.retain_grad()
            outs[n].append(out)

        handles.append(mod.register_forward_hook(keep))
    handles.append(
        m.get_input_embeddings().register_forward_hook(lambda _m, _a, o: o.requires_grad_(True))
    )
    with torch.enable_grad():
        logits = m(ids, use_cache=False).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        loss.backward()
    for h in handles:
        h.remove()
    predicted = ids.shape[0] * (ids.shape[1] - 1)
    for n in (name, k):
        x = xs[n][0].detach().reshape(-1, xs[n][0].shape[-1])
        g = outs[n][0].grad.reshape(-1, outs[n][0].shape[-1])
        torch.testing.assert_close(st[n].hessian, x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            st[n].fisher, g.square().sum(0) / predicted, rtol=1e-4, atol=1e-9
        )
        assert st[n].tokens == ids.numel()
    # q and k read one input: one Hessian, stored once
    assert st[k].hessian is st["model.layers.0.self_attn.q_proj"].hessian


def test_predicted_loss_is_zero_at_the_float_weight_and_quadratic():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 8, generator=g)
    x = torch.randn(100, 8, generator=g)
    st = ModuleStats(x.T @ x / 100, torch.rand(6, generator=g), 100)
    d = torch.randn(6, 8, generator=g) * 0.01
    assert predicted_loss(w, w, st) == 0.0
    a, b = predicted_loss(w, w + d, st), predicted_loss(w, w + 2 * d, st)
    assert a > 0 and b == pytest.approx(4 * a, rel=1e-4)


@pytest.fixture(scope="module")
def model_and_ids():
    m = tiny_model("llama")
    ids = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    return m, ids


def test_allocation_meets_the_budget_and_buys_less_loss_with_more_bits(model_and_ids):
    m, ids = model_and_ids
    before = {k: v.clone() for k, v in m.state_dict().items()}
    allocs = [allocate(m, Recipe(method="gptq"), ids, b, progress=False) for b in (2.4, 3.0, 4.0)]
    prev = float("inf")
    for b, a in zip((2.4, 3.0, 4.0), allocs, strict=True):
        assert a.bits_per_weight <= b
        assert a.predicted_loss <= prev
        prev = a.predicted_loss
        # the recipe reproduces the choice, module by module
        for name, scheme in a.choice.items():
            assert a.recipe.plan_for(name).scheme.name == scheme
        assert set(a.choice) == set(quantizable_linears(m))
    assert allocs[0].predicted_loss > allocs[-1].predicted_loss
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_allocation_keeps_skipped_modules_float(model_and_ids):
    m, ids = model_and_ids
    r = Recipe.from_dict(
        {"method": "rtn", "overrides": [{"pattern": "layers\\.0\\.", "skip": True}]}
    )
    a = allocate(m, r, ids, 3.0, candidates=["w2g32", "w4g32"], progress=False)
    assert not any("layers.0." in n for n in a.choice)
    assert a.recipe.plan_for("model.layers.0.mlp.up_proj") is None
    assert a.probe_method == "rtn"


def test_allocation_keeps_method_overrides_and_refuses_scheme_ones(model_and_ids):
    m, ids = model_and_ids
    r = Recipe.from_dict(
        {"method": "gptq", "overrides": [{"pattern": "down_proj", "method_args": {"damp": 0.1}}]}
    )
    a = allocate(m, r, ids, 3.0, candidates=["w2g32", "w4g32"], progress=False)
    assert a.recipe.plan_for("model.layers.1.mlp.down_proj").method_args["damp"] == 0.1
    pinned = Recipe.from_dict({"overrides": [{"pattern": "down_proj", "scheme": "w8"}]})
    with pytest.raises(LmpressError, match="sets a scheme"):
        allocate(m, pinned, ids, 3.0, progress=False)


def test_allocation_errors_name_the_fix(model_and_ids):
    m, ids = model_and_ids
    with pytest.raises(LmpressError, match="below the lightest"):
        allocate(m, Recipe(), ids, 1.0, candidates=["w2g32", "w4g32"], progress=False)
    with pytest.raises(LmpressError, match="weight-only"):
        allocate(m, Recipe(), ids, 8.0, candidates=["w8sa8"], progress=False)


def test_cli_quantizes_to_a_bit_budget_and_writes_a_reusable_recipe(
    capsys, tmp_path, tiny_llama_dir
):
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(f"word{i % 97} and more text {i}" for i in range(3000)))
    out, rec = tmp_path / "o", tmp_path / "alloc.yaml"
    common = ["--calib", text, "--calib-samples", "4", "--calib-seq-len", "64", "--quiet"]
    code = cli(
        "quantize",
        tiny_llama_dir,
        "-o",
        out,
        "--method",
        "gptq",
        "--bits",
        "3",
        "--candidates",
        "w2g32,w3g32,w4g32",
        "--save-recipe",
        rec,
        "--json",
        tmp_path / "s.json",
        *common,
    )
    assert code == 0
    assert "allocated" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["bits_per_weight"] <= 3.0
    run = json.loads((out / "lmpress_run.json").read_text())["allocation"]
    assert run["bits_per_weight"] <= 3.0 and len(run["choice"]) == len(run["candidates"])
    recipe = yaml.safe_load(rec.read_text())
    assert recipe["method"] == "gptq" and recipe["scheme"] in {"w2g32", "w3g32", "w4g32"}
    # the written recipe runs again as an ordinary recipe, to the same bits
    out2 = tmp_path / "o2"
    assert (
        cli(
            "quantize",
            tiny_llama_dir,
            "-o",
            out2,
            "--recipe",
            rec,
            "--json",
            tmp_path / "s2.json",
            *common,
        )
        == 0
    )
    again = json.loads((tmp_path / "s2.json").read_text())
    assert again["bits_per_weight"] == pytest.approx(summary["bits_per_weight"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bits", "3", "--scheme", "w4g32"], "not both"),
        (["--candidates", "w4g32"], "go with --bits"),
        (["--search", "evopress"], "go with --bits"),
        (["--bits", "3", "--override", "down_proj=w8"], "sets a scheme"),
    ],
)
def test_cli_budget_errors(capsys, tmp_path, tiny_llama_dir, args, needle):
    code = cli("quantize", tiny_llama_dir, "-o", tmp_path / "o", *args)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_non_positive_budget(capsys, tmp_path, tiny_llama_dir):
    with pytest.raises(SystemExit) as e:
        cli("quantize", tiny_llama_dir, "-o", tmp_path / "o", "--bits", "-1")
    assert e.value.code == 2 and "positive number" in capsys.readouterr().err


def test_evopress_never_ends_worse_than_the_knapsack_on_measured_kl(model_and_ids):
    m, ids = model_and_ids
    before = {k: v.clone() for k, v in m.state_dict().items()}
    r = Recipe(method="gptq")
    ks = allocate(m, r, ids, 3.0, progress=False)
    ev = allocate(
        m, r, ids, 3.0, search="evopress", generations=6, search_samples=4, progress=False
    )
    assert ev.bits_per_weight <= 3.0
    log = ev.search_log
    # fitness[0] is the knapsack's choice on the search's tokens; a parent only improves
    assert len(log.fitness) == 7 and log.fitness == sorted(log.fitness, reverse=True)
    assert log.evaluations > 6
    assert (log.accepted == 0) == (ev.choice == ks.choice)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    for name, scheme in ev.choice.items():
        assert ev.recipe.plan_for(name).scheme.name == scheme
