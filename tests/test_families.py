"""The family table (lmpress.models.families) against the models, and its three readers:
the architecture check, the lean decoder and the GGUF exporter."""

import pytest
from conftest import tiny_config, tiny_model
from torch import nn

from lmpress.errors import LmpressError
from lmpress.export import gguf as gguf_export
from lmpress.models import arch
from lmpress.models.arch import check_supported, find_layout, is_linear
from lmpress.models.families import FAMILIES, NOT_DECODER_ONLY, family_of, model_family
from lmpress.runtime import LEAN_FAMILIES, can_decode, runs_family

TESTED = ("llama", "mistral", "qwen2", "qwen3", "gpt2", "opt")  # conftest's tiny_config


def test_the_table_covers_the_tested_families():
    assert tuple(FAMILIES) == TESTED
    assert family_of("t5") is None and family_of(None) is None


@pytest.mark.parametrize("family", TESTED)
def test_every_path_resolves_on_the_model(family):
    model = tiny_model(family)
    fam = model_family(model)
    assert fam is FAMILIES[family] and fam.model_type == model.config.model_type
    for path in (fam.embed, fam.final_norm, fam.head, fam.rotary_module, fam.positions):
        if path is not None:
            model.get_submodule(path)
    blocks = model.get_submodule(fam.blocks)
    assert isinstance(blocks, nn.ModuleList) and len(blocks) == 2
    blk = blocks[0]
    assert all(is_linear(blk.get_submodule(n)) for n in fam.linears)
    for n in (fam.attn_norm, fam.mlp_norm, *(fam.qk_norms or ())):
        norm = blk.get_submodule(n)
        assert isinstance(norm, nn.LayerNorm) == (fam.norm == "layernorm"), n
        assert ("RMSNorm" in type(norm).__name__) == (fam.norm == "rmsnorm"), n
    cfg = model.config
    assert fam.activation == (getattr(cfg, "hidden_act", None) or cfg.activation_function)
    assert fam.ties_head == bool(tiny_config(family).tie_word_embeddings)
    assert (fam.rotary == "learned") == (fam.positions is not None)
    assert (fam.rotary == "half") == (fam.rotary_module is not None)


@pytest.mark.parametrize("family", TESTED)
def test_the_generic_layout_finds_what_the_table_says(family):
    """Quantization discovers blocks generically; it must land on the table's blocks
    and linears (in the order each block applies them, for the unfused families)."""
    model = tiny_model(family)
    fam = FAMILIES[family]
    layout = find_layout(model)
    assert layout.blocks_path == fam.blocks
    assert set(layout.linear_names[0]) == set(fam.linears)


def test_the_architecture_check_reads_the_table():
    assert arch.KNOWN_FAMILIES == TESTED
    for family in TESTED:
        check_supported(tiny_config(family))
    from transformers import T5Config

    with pytest.raises(LmpressError, match="'t5' is not a decoder-only.*llama, mistral"):
        check_supported(T5Config())
    assert "t5" in NOT_DECODER_ONLY


def test_the_decoder_runs_the_llama_style_rows():
    assert LEAN_FAMILIES == ("llama", "mistral", "qwen2", "qwen3")
    assert [f for f in TESTED if runs_family(FAMILIES[f])] == list(LEAN_FAMILIES)
    assert not can_decode(tiny_model("gpt2"))


def test_the_gguf_exporter_reads_the_table():
    want = {"llama": ("llama", True), "mistral": ("llama", True)}
    want |= {"qwen2": ("qwen2", False), "qwen3": ("qwen3", False)}
    got = {t: (f.gguf_arch, f.gguf_permute_qk) for t, f in gguf_export.ARCHS.items()}
    assert got == want
    import gguf

    for fam in gguf_export.ARCHS.values():
        assert fam.split_qkv  # the exporter permutes Q and K by their paths
        gguf.MODEL_ARCH[fam.gguf_arch.upper()]  # a llama.cpp architecture gguf-py knows


def test_the_gguf_exporter_refuses_families_without_an_architecture(tmp_path):
    model = tiny_model("gpt2")
    with pytest.raises(LmpressError, match="GGUF export supports llama, mistral, qwen2, qwen3"):
        gguf_export.export_gguf(model, None, tmp_path / "m.gguf", {})
