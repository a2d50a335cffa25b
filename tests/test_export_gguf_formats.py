"""GGUF export of the grid formats: mxfp4 -> MXFP4 and iq4nl -> IQ4_NL losslessly, the
others re-quantized (IQ4_NL for 4-bit codes, Q8_0 for wider) with their error stated;
read back by gguf-py and, where llama-cpp-python is installed, run in llama.cpp."""

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import needs_smollm2
from test_export import needs_llamacpp, qlinears, summary_name, tiny_checkpoint
from torch import nn

import lmpress
from lmpress.export.gguf import encode_exact, requantize, rotary_row_order
from lmpress.formats.iq4nl import IQ4NL_LEVELS
from lmpress.formats.scheme import parse_scheme
from lmpress.packing.bits import pack_codes
from lmpress.packing.packed import PackedWeight

Q = gguf.GGMLQuantizationType

GRID_CASES = {
    # scheme: (ggml type, exact)
    "mxfp4": ("MXFP4", True),
    "iq4nlg32": ("IQ4_NL", True),
    "iq4nlg64": ("IQ4_NL", True),  # a group's scale repeats over its two blocks
    "iq4nl": ("IQ4_NL", True),  # per channel: rows of 64 and 160 are whole blocks
    "nf4g64": ("IQ4_NL", False),
    "fp4g32": ("IQ4_NL", False),
    "nvfp4": ("IQ4_NL", False),
    "lut4": ("IQ4_NL", False),
    "fp8": ("Q8_0", False),
    "mxfp8": ("Q8_0", False),
}
# bound on the relative (Frobenius) change of a re-quantized weight: IQ4_NL re-rounds
# a 4-bit grid onto another 4-bit grid, Q8_0 an 8-bit one onto 8 bits
REQUANT_REL = {"IQ4_NL": 0.15, "Q8_0": 0.02}


def bits(x: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` as its int32 bit patterns, -0 taken as +0 (ggml's tables have no
    -0: lmpress's E2M1 code 8 decodes to -0, ggml's to +0, the same number)."""
    return (x + 0.0).view(torch.int32)


def ggml_weight(data: np.ndarray, qtype: Q, shape: tuple[int, int]) -> torch.Tensor:
    """gguf-py's float32 decoding of ggml blocks ``data`` as a ``shape`` tensor."""
    return torch.from_numpy(np.array(gguf.quants.dequantize(data, qtype)).reshape(shape).copy())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # e = 254, wanted
def test_mxfp4_blocks_decode_bit_for_bit_every_code_and_extreme_exponent():
    """Every E2M1 code under E8M0 exponents from 0 (a subnormal scale) to 254 (products
    overflow to inf in both): ggml's doubled table under a halved scale is the same."""
    s = parse_scheme("mxfp4")
    n, k = 4, 64
    codes = (torch.arange(n * k) % 16).reshape(n, k).to(torch.uint8)
    codes[1] = codes[1].flip(0)  # each nibble position sees every code
    e = torch.tensor([[0, 1], [126, 127], [128, 200], [253, 254]], dtype=torch.uint8)
    packed = PackedWeight(s, n, k, {"qweight": pack_codes(codes, 4), "scales": e})
    qtype, data = encode_exact(packed, None)
    assert qtype == Q.MXFP4 and data.shape == (n, k // 32 * 17)
    assert np.array_equal(data.reshape(n, 2, 17)[..., 0], e.numpy())  # the byte, as it is
    back, w = ggml_weight(data, qtype, (n, k)), packed.dequantize()
    assert torch.isinf(w).any() and (w.abs() < 2.0**-126).any()
    assert torch.equal(bits(back), bits(w))


def test_iq4nl_table_is_ggml_and_blocks_decode_bit_for_bit():
    """The format's table is gguf-py's ``kvalues``; signed fp16 scales and ggml's nibble
    order (value j low, j + 16 high) carry the weight over exactly."""
    assert IQ4NL_LEVELS == gguf.quants.IQ4_NL.kvalues
    s = parse_scheme("iq4nlg32")
    w = torch.randn(6, 96, generator=torch.Generator().manual_seed(0)) * 0.02
    params = s.fmt.choose_params(w, search=True)
    assert (params["scale"] < 0).any() and (params["scale"] > 0).any()
    packed = PackedWeight.from_codes(s.fmt.encode(w, s.fmt.expand(params, 96, 6)), params, s)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    qtype, data = encode_exact(packed, order)
    assert qtype == Q.IQ4_NL
    assert torch.equal(bits(ggml_weight(data, qtype, (6, 96))), bits(packed.dequantize()[order]))


def test_iq4nl_bf16_scales_map_only_where_fp16_holds_them():
    s = parse_scheme("iq4nlg32:bf16")

    def packed(scale: float) -> PackedWeight:
        w = torch.randn(2, 32, generator=torch.Generator().manual_seed(1)) * scale
        p = s.fmt.choose_params(w)
        return PackedWeight.from_codes(s.fmt.encode(w, s.fmt.expand(p, 32, 2)), p, s)

    assert encode_exact(packed(0.02), None)[0] == Q.IQ4_NL
    assert encode_exact(packed(1e7), None) is None  # scales beyond fp16's 65504


def test_requantize_into_iq4_nl_is_close_and_reads_back():
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(2)) * 0.02
    back = ggml_weight(requantize(w, Q.IQ4_NL), Q.IQ4_NL, (8, 128))
    assert ((back - w).norm() / w.norm()) < 0.1


def gguf_weights(out: Path, summary: dict, model) -> dict[str, tuple[Q, torch.Tensor]]:
    """Each quantized module's GGUF tensor: its type and gguf-py's decoding, float32
    ``[out, in]`` in lmpress's row order (Q and K rows taken back from ggml's rotary
    order)."""
    tensors = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    cfg = model.config
    found = {}
    for name, m in qlinears(model).items():
        t = tensors[summary_name(summary, name)]
        back = ggml_weight(t.data, t.tensor_type, (m.out_features, m.in_features))
        heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}
        n_head = heads.get(name.rpartition(".")[2])
        if n_head is not None:
            unpermuted = torch.empty_like(back)
            unpermuted[rotary_row_order(back.shape[0], n_head)] = back
            back = unpermuted
        found[name] = (t.tensor_type, back)
    return found


@needs_smollm2
@pytest.mark.parametrize("scheme", list(GRID_CASES))
def test_gguf_grid_readback_matches_lmpress_weights(tmp_path, smol_tokenizer, scheme):
    """gguf-py reads back each module's type, and its decoding equals lmpress's weight bit
    for bit where the mapping is exact; elsewhere the summary states the change."""
    ckpt, model = tiny_checkpoint(tmp_path, scheme, smol_tokenizer)
    out = tmp_path / "m.gguf"
    summary = lmpress.export_model(ckpt, "gguf", out, progress=False)
    want_type, exact = GRID_CASES[scheme]
    mods = qlinears(model)
    assert summary["tensor_types"] == {want_type: len(mods)}
    assert summary["exact_grid_modules"] == (len(mods) if exact else 0)
    for name, (qtype, back) in gguf_weights(out, summary, model).items():
        row = summary["tensors"][summary_name(summary, name)]
        w = mods[name].packed().dequantize()
        assert qtype == Q[want_type], name
        assert row["max_abs_error"] == pytest.approx((back - w).abs().max().item()), name
        if exact:
            assert row["mapping"] == "exact grid"
            assert torch.equal(bits(back), bits(w)), name
        else:
            assert row["mapping"] == "re-quantized"
            assert 0 < row["rel_error"] < REQUANT_REL[want_type], (name, row["rel_error"])


@needs_smollm2
def test_grid_fallback_type_chooses_the_target(tmp_path, smol_tokenizer):
    ckpt, model = tiny_checkpoint(tmp_path, "nf4g64", smol_tokenizer)
    out = tmp_path / "m.gguf"
    summary = lmpress.export_model(ckpt, "gguf", out, progress=False, grid_fallback_type="q8_0")
    assert summary["tensor_types"] == {"Q8_0": len(qlinears(model))}


def llamacpp_knows(qtype: Q) -> bool:
    """Whether the installed llama.cpp's ggml has type ``qtype``: llama-cpp-python mirrors
    the ``ggml_type`` enum of the llama.cpp it bundles as ``GGML_TYPE_*`` constants (a
    ctypes call of ``ggml_type_name`` would read past the table for unknown types)."""
    import llama_cpp.llama_cpp as C

    return getattr(C, f"GGML_TYPE_{qtype.name}", None) == int(qtype)


@needs_smollm2
@needs_llamacpp
@pytest.mark.parametrize("scheme", ["mxfp4", "iq4nlg32", "nf4g64"])
def test_gguf_grid_runs_in_llama_cpp(tmp_path, smol_tokenizer, scheme):
    """llama.cpp's logits for the exported GGUF agree with lmpress's model within
    test_export's tolerance for the integer types. nf4g64 goes through its IQ4_NL
    re-quantization, so there lmpress's model is given the exported weights (the
    re-quantization itself is bounded by the readback test): what is checked is that
    llama.cpp computes what the file holds."""
    from lmpress.eval.llamacpp import llamacpp_logits

    want = Q[GRID_CASES[scheme][0]]
    if not llamacpp_knows(want):
        pytest.skip(f"this llama-cpp-python's ggml has no {want.name} type")
    ckpt, _ = tiny_checkpoint(tmp_path, scheme, smol_tokenizer)
    out = tmp_path / "m.gguf"
    summary = lmpress.export_model(ckpt, "gguf", out, progress=False)
    ids = torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(2)).tolist()
    theirs = llamacpp_logits(out, ids, threads=1)
    ours_model = lmpress.load(ckpt)
    if not GRID_CASES[scheme][1]:
        for name, (_, w) in gguf_weights(out, summary, ours_model).items():
            parent, _, child = name.rpartition(".")
            dense = nn.Linear(w.shape[1], w.shape[0], bias=False)
            dense.weight.data = w
            setattr(ours_model.get_submodule(parent), child, dense)
    with torch.no_grad():
        ours = ours_model(torch.tensor([ids])).logits[0]
    agree = (theirs.argmax(-1) == ours.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree
    assert (theirs - ours).abs().max() < 0.1 * ours.abs().max()
