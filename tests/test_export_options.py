"""Exporters declare their options; options are checked like method options."""

import gguf
import pytest
from test_cli import tiny_bpe_model

import lmpress
from lmpress.errors import LmpressError
from lmpress.export import EXPORTERS, ExportOption, register_exporter
from lmpress.export.base import CONTEXT_KEYS


def test_every_exporter_declares_usable_defaults():
    for name in EXPORTERS.names():
        spec = EXPORTERS.get(name)
        assert spec.options(None, name) == spec.defaults, name
        assert not set(spec.declared) & set(CONTEXT_KEYS), name
        assert spec.description, name
    assert EXPORTERS.get("gguf").suffix == ".gguf"
    assert EXPORTERS.get("compressed-tensors").writes_directory


def test_options_are_checked_by_name_type_and_choice():
    gguf_spec = EXPORTERS.get("gguf")
    given = gguf_spec.options({"embed_type": "f16"}, "gguf")
    assert given == {"embed_type": "f16", "fallback_type": "q8_0", "grid_fallback_type": "auto"}
    with pytest.raises(LmpressError, match=r"unknown option\(s\) \['scale_dtype'\] for export"):
        gguf_spec.options({"scale_dtype": "float32"}, "gguf")
    with pytest.raises(LmpressError, match="embed_type=16 of export format 'gguf' must be a str"):
        gguf_spec.options({"embed_type": 16}, "gguf")
    with pytest.raises(LmpressError, match="out of range: one of f32, f16, bf16, q8_0"):
        gguf_spec.options({"embed_type": "q2_k"}, "gguf")
    with pytest.raises(LmpressError, match="allowed: none"):
        EXPORTERS.get("gptq").options({"embed_type": "f16"}, "gptq")


def test_registration_refuses_reserved_names_and_impossible_defaults():
    with pytest.raises(ValueError, match="reserved for the run's context"):
        register_exporter("bad", "never registered", progress=ExportOption(True, "bars"))
    with pytest.raises(ValueError, match="no choice"):
        register_exporter("bad", "never registered", level=ExportOption(9, "how", (1, 2)))
    assert "bad" not in EXPORTERS


def test_export_model_checks_options_before_loading_anything(tmp_path):
    missing = tmp_path / "missing"  # the option error comes first, so the model is never read
    with pytest.raises(LmpressError, match="embed_type='q2_k'"):
        lmpress.export_model(missing, "gguf", tmp_path / "m.gguf", embed_type="q2_k")
    with pytest.raises(LmpressError, match="unknown option"):
        lmpress.export_model(missing, "compressed-tensors", tmp_path / "ct", embed_type="f16")


def test_gguf_embeddings_in_bfloat16(tmp_path):
    """bf16, a declared choice the command line did not offer before, writes BF16 tensors."""
    d, _ = tiny_bpe_model(tmp_path)
    out = tmp_path / "m.gguf"
    summary = lmpress.export_model(d, "gguf", out, progress=False, embed_type="bf16")
    assert summary["tensors"]["token_embd.weight"]["type"] == "BF16"
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(out)).tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.BF16
