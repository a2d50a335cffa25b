import pytest
import torch

from lmpress.packing import pack_codes, packed_row_bytes, unpack_codes


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("cols", [1, 7, 8, 64, 577])
def test_pack_roundtrip(bits, cols):
    g = torch.Generator().manual_seed(bits * 1000 + cols)
    codes = torch.randint(0, 1 << bits, (5, cols), generator=g)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (5, packed_row_bytes(cols, bits))
    assert torch.equal(unpack_codes(packed, bits, cols).long(), codes)


def test_4bit_layout_is_low_nibble_first():
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    assert pack_codes(codes, 4).tolist() == [[0x21, 0x43, 0x65, 0x87]]


def test_extreme_codes_8bit():
    codes = torch.full((2, 16), 255)
    assert torch.equal(unpack_codes(pack_codes(codes, 8), 8, 16).long(), codes)


# -- the format-neutral container: optional components ----------------------------------


def _packed_with(components: tuple[str, ...], rows: int = 12, cols: int = 40, seed: int = 0):
    """A w4g16 packed weight of ``[rows, cols]`` holding the named optional components."""
    from lmpress.formats import parse_scheme
    from lmpress.methods.rtn import rtn
    from lmpress.packing.components import pack_mask

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    extra = {}
    if "mask" in components:
        extra.update(pack_mask(torch.rand(rows, cols, generator=g) > 0.5))
    if "lowrank" in components:
        extra["lowrank_u"] = (0.1 * torch.randn(rows, 3, generator=g)).half()
        extra["lowrank_v"] = (0.1 * torch.randn(3, cols, generator=g)).half()
    scheme = parse_scheme("w4g16")
    res = rtn(w, scheme)
    res.extra = extra
    return res.packed(scheme), w


def test_optional_components_decode_by_their_rules():
    from lmpress.packing import unpack_codes

    plain, _ = _packed_with(())
    both, _ = _packed_with(("mask", "lowrank"))
    assert both.optional_components() == ["mask", "lowrank"]
    mask = unpack_codes(both.tensors["mask"], 1, 40).float()
    lr = both.tensors["lowrank_u"].float() @ both.tensors["lowrank_v"].float()
    assert torch.equal(both.dequantize(), plain.dequantize() * mask + lr)
    # every stored bit counts: 1 bit per weight of mask, 16 per factor entry
    assert both.stored_bits() == plain.stored_bits() + 12 * 8 * 5 + 16 * 3 * (12 + 40)


def test_unknown_components_are_refused():
    from lmpress.errors import LmpressError
    from lmpress.packing.packed import PackedWeight

    plain, _ = _packed_with(())
    with pytest.raises(LmpressError, match="unknown component"):
        PackedWeight(plain.scheme, 12, 40, {**plain.tensors, "codebook": torch.zeros(4)})


def test_concat_rows_stacks_masks_and_refuses_unshared_low_rank():
    from lmpress.errors import LmpressError
    from lmpress.packing.packed import concat_rows

    a, _ = _packed_with(("mask",), seed=1)
    b, _ = _packed_with(("mask",), seed=2)
    both = concat_rows([a, b])
    assert torch.equal(both.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    c, _ = _packed_with(("lowrank",), seed=3)
    d, _ = _packed_with(("lowrank",), seed=4)
    with pytest.raises(LmpressError, match="low-rank"):
        concat_rows([c, d])
    with pytest.raises(LmpressError, match="different components"):
        concat_rows([a, c])


def test_qlinear_keeps_every_component_through_save_and_load(tmp_path):
    from conftest import tiny_model

    import lmpress
    from lmpress.nn.qlinear import QLinear

    model = tiny_model("llama")
    result = lmpress.quantize(
        model, {"method": "rtn", "scheme": "w4g16"}, calib=None, progress=False
    )
    name = "model.layers.0.mlp.down_proj"
    old = result.model.get_submodule(name)
    packed, _ = _packed_with(("mask", "lowrank"), old.out_features, old.in_features)
    q = QLinear.from_packed(packed, None)
    parent, _, child = name.rpartition(".")
    setattr(result.model.get_submodule(parent), child, q)
    assert {"mask", "lowrank_u", "lowrank_v"} <= set(dict(q.named_buffers()))
    # the C kernels do not decode these components: the reference runs, saying why
    assert q.kernel()[0].name == "torch" and q.kernel_reason.startswith("cpu: ")
    path = lmpress.save(result, tmp_path / "ckpt")
    loaded = lmpress.load(path)
    lq = loaded.get_submodule(name)
    assert torch.equal(lq.dequantized_weight(), packed.dequantize())
    ids = torch.arange(12).reshape(1, 12)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, result.model(ids).logits)
    # no export target stores these components: refused in one line, nothing written
    from lmpress.errors import LmpressError

    with pytest.raises(LmpressError, match="cannot store the mask, lowrank component"):
        lmpress.api.export_model(path, "compressed-tensors", tmp_path / "ct")
    assert not (tmp_path / "ct").exists()
    from lmpress.eval.size import model_size_stats

    # bits per weight count the extra components: exactly their stored bits more
    before = model_size_stats(
        lmpress.quantize(
            tiny_model("llama"), {"method": "rtn", "scheme": "w4g16"}, calib=None, progress=False
        ).model
    )
    after = model_size_stats(loaded)
    added = packed.stored_bits() - old.packed().stored_bits()
    total = after.quantized_weights
    assert round((after.bits_per_weight - before.bits_per_weight) * total) == added


def test_packed_weights_with_missing_or_misshapen_tensors_never_form():
    from lmpress.errors import LmpressError
    from lmpress.packing.packed import PackedWeight

    plain, _ = _packed_with(())
    no_zeros = {k: v for k, v in plain.tensors.items() if k != "qzeros"}
    with pytest.raises(LmpressError, match="lacks 'qzeros'"):
        PackedWeight(plain.scheme, 12, 40, no_zeros)
    with pytest.raises(LmpressError, match="scales of a 12x40 w4g16 weight"):
        PackedWeight(plain.scheme, 12, 40, {**plain.tensors, "scales": plain.scales.float()})
    both, _ = _packed_with(("lowrank",))
    with pytest.raises(LmpressError, match="lowrank.*lacks"):
        PackedWeight(
            plain.scheme, 12, 40, {**plain.tensors, "lowrank_u": both.tensors["lowrank_u"]}
        )
    with pytest.raises(LmpressError, match="mask is"):
        PackedWeight(plain.scheme, 12, 40, {**plain.tensors, "mask": torch.zeros(12, 4)})


def test_checkpoints_carry_the_lowest_format_version_that_describes_them():
    from lmpress.formats import parse_scheme
    from lmpress.methods.rtn import rtn
    from lmpress.packing.packed import format_version

    w = torch.randn(8, 32)
    plain, _ = _packed_with(())
    fz = rtn(w, parse_scheme("w4g16:fz")).packed(parse_scheme("w4g16:fz"))
    masked, _ = _packed_with(("mask",))
    assert format_version([plain]) == 1
    assert format_version([plain, fz]) == 2
    assert format_version([plain, fz, masked]) == 3
