"""Adding a format, a method and an exporter is one file each, through the public
registries: a toy of each runs quantize -> save -> load -> export."""

import json
import re
from pathlib import Path

import pytest
import torch

import lmpress
from lmpress.errors import LmpressError
from lmpress.formats import FORMATS, Format, Scheme, register_format
from lmpress.formats.affine import group_view
from lmpress.methods.base import METHODS, Needs, QuantResult, register_method
from lmpress.packing.components import Component

# -- a toy format: ternary codes {-1, 0, +1} times one fp16 scale per group ----------


class Ternary(Format):
    """Codes 0, 1, 2 decode to ``(q - 1) * s``; stored two bits a code, one byte per four."""

    param_names = ("scale",)

    @classmethod
    def check_scheme(cls, scheme: Scheme) -> None:
        if scheme.bits != 2 or not scheme.symmetric:
            raise LmpressError("ternary codes take 2 bits and are symmetric")

    @classmethod
    def parse(cls, spec: str) -> Scheme | None:
        m = re.fullmatch(r"tern(?:g(\d+))?", spec)
        if not m:
            return None
        group = int(m[1]) if m[1] else 0
        return Scheme(
            bits=2,
            granularity="group" if group else "channel",
            group_size=group,
            symmetric=True,
            format="ternary",
        )

    def scheme_name(self) -> str:
        g = self.scheme.group_size
        return f"tern{'g' + str(g) if g else ''}"

    def choose_params(self, w, importance=None, search=False):
        g, mask = group_view(w, self.scheme)
        mean_abs = (g.abs() * mask).sum(-1) / mask.sum(-1)
        scale = (1.5 * mean_abs).clamp_min(2.0**-14).to(torch.float16).to(torch.float32)
        return {"scale": scale}

    def encode(self, w, params, offset=None):
        x = w / params["scale"] + (0 if offset is None else offset)
        return torch.clamp(torch.round(x), -1, 1) + 1

    def decode(self, codes, params):
        return (codes.to(torch.float32) - 1) * params["scale"]

    def components(self, out_features, in_features):
        rows, groups = out_features, -(-in_features // self.scheme.group_len(in_features))
        return {
            "qweight": Component((out_features, -(-in_features // 4)), torch.uint8, "codes"),
            "scales": Component((rows, groups), torch.float16, "params"),
        }

    def pack(self, codes, params):
        c = torch.nn.functional.pad(codes.to(torch.int64), (0, (-codes.shape[1]) % 4))
        c = c.reshape(c.shape[0], -1, 4)
        packed = (c << torch.tensor([0, 2, 4, 6])).sum(-1).to(torch.uint8)
        return {"qweight": packed, "scales": params["scale"].to(torch.float16)}

    def unpack_codes(self, tensors, in_features):
        b = tensors["qweight"].to(torch.int64).unsqueeze(-1)
        codes = (b >> torch.tensor([0, 2, 4, 6])) & 3
        return codes.reshape(b.shape[0], -1)[:, :in_features].to(torch.uint8)

    def unpack_params(self, tensors):
        return {"scale": tensors["scales"].float()}

    def concat_params(self, parts):
        return {"scales": torch.cat([p["scales"] for p in parts])}


def toy_nearest(w, scheme, hessian=None, shrink: float = 1.0):
    """Round to nearest on the format's grid, with every scale multiplied by ``shrink``."""
    fmt = scheme.fmt
    params = {k: v * shrink for k, v in fmt.choose_params(w).items()}
    return QuantResult(fmt.encode(w, fmt.expand(params, w.shape[1])), params)


def export_codes(model, tokenizer, out: Path, options: dict) -> dict:
    """A toy exporter: every quantized module's codes and dequantized weight in one
    torch file, optionally without the weights."""
    from lmpress.export.base import exportable_modules

    mods = exportable_modules(model, "toy", formats=("int", "ternary"))
    payload = {
        name: {
            "codes": m.packed().codes(),
            **({} if options["codes_only"] else {"weight": m.dequantized_weight()}),
        }
        for name, m in mods
    }
    torch.save(payload, out)
    return {"modules": len(payload), "codes_only": options["codes_only"]}


@pytest.fixture
def toys():
    """Register the toy format, method and exporter for one test, and take them out."""
    from lmpress.export import EXPORTERS
    from lmpress.export.base import ExportOption, register_exporter

    register_format("ternary")(Ternary)
    register_method("toy-nearest", needs=Needs(), format_ops=("choose_params", "encode"))(
        toy_nearest
    )
    register_exporter(
        "toy-codes",
        "codes and weights in one torch file",
        suffix=".pt",
        codes_only=ExportOption(False, "leave the dequantized weights out"),
    )(export_codes)
    yield
    FORMATS._items.pop("ternary")
    METHODS._items.pop("toy-nearest")
    EXPORTERS._items.pop("toy-codes")


def test_a_new_format_and_method_run_end_to_end(toys, tmp_path: Path):
    from conftest import tiny_model

    model = tiny_model("llama")
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    recipe = {
        "method": "toy-nearest",
        "scheme": "tern",
        "overrides": [{"pattern": "mlp", "scheme": "terng16", "method_args": {"shrink": 0.9}}],
    }
    result = lmpress.quantize(model, recipe, calib=None, progress=False)
    assert result.packed["model.layers.0.mlp.up_proj"].scheme.name == "terng16"
    path = lmpress.save(result, tmp_path / "ckpt")
    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    assert qc["modules"]["model.layers.0.mlp.up_proj"]["scheme"]["format"] == "ternary"
    loaded = lmpress.load(path)
    with torch.no_grad():
        want = result.model(ids).logits
        got = loaded(ids).logits
    assert torch.equal(got, want)
    layer = loaded.get_submodule("model.layers.0.mlp.up_proj")
    codes = layer.packed().codes()
    assert int(codes.max()) <= 2 and int(codes.min()) >= 0
    # the C kernels read integer codes only: the choice falls back, saying why
    assert layer.kernel()[0].name == "torch" and layer.kernel_reason.startswith("cpu: ")
    # the exporter: options validated, output atomic, the codes as stored
    with pytest.raises(LmpressError, match="codes_only"):
        lmpress.api.export_model(path, "toy-codes", tmp_path / "x.pt", codes_only="yes")
    summary = lmpress.api.export_model(path, "toy-codes", tmp_path / "codes.pt", codes_only=False)
    assert summary["modules"] == len(result.packed)
    written = torch.load(tmp_path / "codes.pt")
    assert torch.equal(written["model.layers.0.mlp.up_proj"]["codes"], codes)
    assert torch.equal(written["model.layers.0.mlp.up_proj"]["weight"], layer.dequantized_weight())


def test_exporters_refuse_formats_and_components_they_cannot_store(
    toys, tmp_path: Path, smol_tokenizer
):
    from conftest import tiny_model

    model = tiny_model("llama", vocab=len(smol_tokenizer))
    result = lmpress.quantize(model, {"scheme": "tern"}, calib=None, progress=False)
    result.tokenizer = smol_tokenizer
    path = lmpress.save(result, tmp_path / "ckpt")
    for target in ("gguf", "compressed-tensors"):
        with pytest.raises(LmpressError, match="format 'ternary'"):
            lmpress.api.export_model(path, target, tmp_path / f"out-{target}")
        assert not (tmp_path / f"out-{target}").exists()


def test_gptq_runs_on_any_format_with_its_operations(toys):
    from lmpress.methods.gptq import gptq

    gen = torch.Generator().manual_seed(1)
    w = torch.randn(32, 64, generator=gen)
    x = torch.randn(256, 64, generator=gen) * torch.linspace(0.2, 3.0, 64)
    h = x.T @ x / x.shape[0]
    scheme = lmpress.formats.parse_scheme("terng16")

    def output_error(r: QuantResult) -> float:
        d = r.packed(scheme).dequantize() - w
        return float((d @ h * d).sum())

    # GPTQ's error feedback on the ternary grid beats rounding to it
    assert output_error(gptq(w, scheme, h)) < 0.9 * output_error(toy_nearest(w, scheme))


def test_a_method_refuses_a_format_without_its_operations(toys):
    from lmpress.recipe import Recipe

    for method in ("hqq", "learned-round"):  # both solve for an affine zero point
        recipe = Recipe.from_dict({"method": method, "scheme": "terng16"})
        with pytest.raises(LmpressError, match=f"method '{method}' cannot use format 'ternary'"):
            recipe.plan_for("model.layers.0.x")
    # AWQ needs a range choice and a round trip, which the toy has
    plan = Recipe.from_dict({"method": "awq+toy-nearest", "scheme": "terng16"})
    assert plan.plan_for("model.layers.0.x").scheme.format == "ternary"


def test_capabilities_are_read_from_what_a_format_implements(toys):
    from lmpress.formats import IntFormat

    assert Ternary.provides("encode") and Ternary.provides("fake_quantize")
    assert not Ternary.provides("storable_params") and not Ternary.provides("affine")
    assert IntFormat.provides("affine") and IntFormat.provides("round_params")
    assert not Format.provides("encode") and not Ternary.provides("no_such_op")
