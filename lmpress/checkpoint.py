"""Save and load compressed models: ``model.safetensors`` + ``config.json`` + tokenizer.

``config.json`` carries ``quantization_config``::

    {"quant_method": "lmpress", "format_version": 1, 2 or 3, ...
     "modules": {"model.layers.0.self_attn.q_proj": {"method": "gptq", "scheme": {...},
                 "components": {"qweight": {"shape": [576, 288], "dtype": "uint8"}, ...}}},
     "recipe": {...}, "calibration": {...}, "source_model": "..."}

``components`` lists every tensor a module stores (its format's and any optional
ones, :mod:`lmpress.packing.components`); the loader checks each against the scheme
and the file. The version is the lowest that describes the checkpoint
(:func:`lmpress.packing.packed.format_version`): 3 only where optional components or
a non-integer format need a reader that knows them, so older lmpress versions still
load the rest (they ignore ``components``). Checkpoints written before ``components``
existed hold exactly their format's tensors.

Writes go to a temporary sibling directory that is renamed into place at the
end, so an interrupted save never leaves a directory that looks complete.
"""

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmpress.__version__ import __version__
from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme
from lmpress.models.arch import linear_weight
from lmpress.models.checks import check_finite_state
from lmpress.nn.kv_cache import install_kv_quant, kv_scheme_of, parse_kv
from lmpress.nn.qlinear import QLinear
from lmpress.outputs import atomic_output
from lmpress.packing.components import optional_component_of
from lmpress.packing.packed import PACKED_FORMAT_VERSION, PackedWeight, format_version
from lmpress.pipeline import _set_module
from lmpress.transforms.rotation import attach_input_rotation, online_rotations, rotation_from_spec

WEIGHTS_FILE = "model.safetensors"
# What differs between two runs of the same recipe (timings, memory) lives apart from
# config.json, so that the same seed gives the same bytes in the checkpoint proper.
RUN_FILE = "lmpress_run.json"
RUN_KEYS = ("quantize_seconds", "peak_rss_mb", "allocation")


def _state_dict_untied(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the second copy of tied tensors (safetensors refuses shared memory)."""
    sd = model.state_dict()
    seen: dict[int, str] = {}
    out = {}
    for k, v in sd.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        out[k] = v.detach().contiguous()
    return out


def save_checkpoint(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    extra_config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (with ``QLinear`` modules) and ``tokenizer`` to ``out_dir`` atomically."""
    out = Path(out_dir)
    source = (extra_config or {}).get("source_model")
    check_finite_state(model, "the quantized model")
    with atomic_output(out, overwrite, is_dir=True, inputs=[source] if source else ()) as tmp:
        extra = dict(extra_config or {})
        extra_modules = extra.pop("modules", {})
        run = {k: extra.pop(k) for k in RUN_KEYS if k in extra}
        modules = {
            name: {
                **extra_modules.get(name, {}),
                "scheme": m.scheme.to_dict(),
                "components": _describe(m.packed().expected()),
            }
            for name, m in model.named_modules()
            if isinstance(m, QLinear)
        }
        qc = {
            "quant_method": "lmpress",
            "format_version": format_version(
                [m.packed() for m in model.modules() if isinstance(m, QLinear)]
            ),
            "lmpress_version": __version__,
            **extra,
            "modules": modules,
        }
        rotations = online_rotations(model)
        if rotations:
            qc["online_rotations"] = rotations
        kv = kv_scheme_of(model)
        if kv is not None:
            qc["kv_cache"] = kv.to_dict()
        config = model.config
        config_dict = config.to_dict()
        config_dict["quantization_config"] = qc
        config_dict["torch_dtype"] = "float32"
        save_file(_state_dict_untied(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config_dict, indent=2, default=str))
        if run:
            (tmp / RUN_FILE).write_text(json.dumps(run, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out


def _describe(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, Any]:
    return {
        n: {"shape": list(sh), "dtype": str(dt).removeprefix("torch.")}
        for n, (sh, dt) in shapes.items()
    }


def _module_components(
    name: str, spec: dict[str, Any], scheme: Scheme, out_f: int, in_f: int, path: Path
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every tensor module ``name`` stores, by the checkpoint's list (format 3) or, for
    older checkpoints, by its scheme; a list that contradicts the scheme is an error."""
    expected = PackedWeight.expected_shapes(scheme, out_f, in_f)
    listed = spec.get("components")
    if listed is None:
        return expected
    if not isinstance(listed, dict) or not all(isinstance(d, dict) for d in listed.values()):
        raise LmpressError(f"{path}: {name}'s components must map names to shape and dtype")
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for t, d in listed.items():
        dtype = getattr(torch, str(d.get("dtype")), None)
        shape = tuple(d.get("shape", ()))
        if not isinstance(dtype, torch.dtype):
            raise LmpressError(f"{path}: {name}.{t} declares an unknown dtype {d.get('dtype')!r}")
        if t in expected:
            if (shape, dtype) != expected[t]:
                raise LmpressError(
                    f"{path}: {name}.{t} is declared {list(shape)} {d.get('dtype')}, but scheme "
                    f"{scheme.name} stores {list(expected[t][0])} {expected[t][1]}"
                )
        elif optional_component_of(t) is None:
            raise LmpressError(f"{path}: {name} lists an unknown component {t!r}")
        out[t] = (shape, dtype)
    missing = sorted(set(expected) - set(out))
    if missing:
        raise LmpressError(f"{path}: {name} lacks the component(s) {missing} of {scheme.name}")
    return out


def _check_stored(
    state: dict[str, torch.Tensor],
    declared: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]],
    path: Path,
) -> None:
    """Each quantized module's stored tensors have the shapes and dtypes it declares."""
    for module, comps in declared.items():
        for t, (shape, dtype) in comps.items():
            key = f"{module}.{t}"
            got = state.get(key)
            if got is None:
                raise LmpressError(f"{path}: {WEIGHTS_FILE} lacks {key}")
            if tuple(got.shape) != shape or got.dtype != dtype:
                raise LmpressError(
                    f"{path}: {key} is stored as {list(got.shape)} {got.dtype}, but its module "
                    f"declares {list(shape)} {dtype}; the checkpoint is damaged or mislabelled"
                )


def _read_config(path: Path) -> dict[str, Any]:
    from lmpress.models.checks import read_model_config

    if not (path / "config.json").is_file():
        raise LmpressError(f"{path} is not a model directory (no config.json)")
    return read_model_config(path)


def _check_quant_config(qc: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    if not qc or qc.get("quant_method") != "lmpress":
        raise LmpressError(f"{path} is not an lmpress checkpoint (no lmpress quantization_config)")
    if qc.get("format_version", 0) > PACKED_FORMAT_VERSION:
        raise LmpressError(
            f"{path} was written by a newer lmpress (format {qc['format_version']}); "
            "upgrade lmpress"
        )
    return qc


def read_quant_config(path: str | Path) -> dict[str, Any]:
    """The ``quantization_config`` of an lmpress checkpoint directory (validated)."""
    return _check_quant_config(_read_config(Path(path)).get("quantization_config"), Path(path))


def read_run_info(path: str | Path) -> dict[str, Any]:
    """Timings and memory of the run that wrote a checkpoint (empty if not recorded)."""
    f = Path(path) / RUN_FILE
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        return {}


def _no_init_weights():
    """Skip random initialisation of weights that the checkpoint overwrites anyway."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def empty_model(cfg_dict: dict[str, Any]) -> nn.Module:
    """A transformers causal LM for ``cfg_dict`` with its weights on the meta device."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = AutoConfig.for_model(**cfg_dict)
    with init_empty_weights(include_buffers=False), _no_init_weights():
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def fill_model(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Assign ``state`` to ``model`` (tied weights re-tied); every tensor must be supplied,
    with the shape and dtype the model has for it."""
    own = model.state_dict(keep_vars=True)
    for key, t in state.items():
        want = own.get(key)
        if want is not None and (want.shape != t.shape or want.dtype != t.dtype):
            raise LmpressError(
                f"{path}: {key} is stored as {list(t.shape)} {t.dtype}, but the model has it "
                f"as {list(want.shape)} {want.dtype}; the checkpoint is damaged or mislabelled"
            )
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected:
        raise LmpressError(f"{path}: unexpected tensors in checkpoint, e.g. {unexpected[:3]}")
    model.tie_weights()
    still_meta = [
        n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"
    ]
    if still_meta:
        raise LmpressError(f"{path}: checkpoint lacks tensors, e.g. {still_meta[:3]}")


def load_checkpoint(path: str | Path, with_tokenizer: bool = True):
    """Load an lmpress checkpoint as a transformers model (QLinear modules) and its tokenizer."""
    path = Path(path)
    cfg_dict = _read_config(path)
    qc = _check_quant_config(cfg_dict.pop("quantization_config", None), path)
    if not (path / WEIGHTS_FILE).is_file():
        raise LmpressError(f"{path} has no {WEIGHTS_FILE}; the checkpoint is incomplete")
    from lmpress.models.load import check_directory

    check_directory(path, cfg_dict)  # headers readable, block count as stored: before building
    model = empty_model(cfg_dict)
    state = load_file(str(path / WEIGHTS_FILE))
    schemes: dict[str, Scheme] = {}
    declared: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}
    where = f"{path / 'config.json'}: quantization_config"
    modules = qc.get("modules")
    if not isinstance(modules, dict):
        raise LmpressError(f"{where}.modules must map module names to their schemes")
    for name, spec in modules.items():
        try:
            old = model.get_submodule(name)
            out_f, in_f = linear_weight(old).shape
        except (AttributeError, LmpressError, ValueError):
            raise LmpressError(
                f"{where} names {name!r}, which the model has no linear of"
            ) from None
        if not isinstance(spec, dict) or not isinstance(spec.get("scheme"), dict):
            raise LmpressError(f"{where}.modules[{name!r}] lacks its scheme (a JSON object)")
        key = json.dumps(spec["scheme"], sort_keys=True)
        try:
            scheme = schemes.setdefault(key, Scheme.from_dict(spec["scheme"]))
        except (LmpressError, TypeError, ValueError, KeyError) as e:
            raise LmpressError(f"{where}.modules[{name!r}].scheme is malformed ({e})") from None
        declared[name] = _module_components(name, spec, scheme, out_f, in_f, path)
        # Buffers start on the meta device; the state dict supplies them (assign=True).
        q = QLinear(
            in_f, out_f, scheme, old.bias is not None, device="meta", components=declared[name]
        )
        _set_module(model, name, q)
    rotations = qc.get("online_rotations") or {}
    if not isinstance(rotations, dict):
        raise LmpressError(f"{where}.online_rotations must map module names to rotations")
    for name, spec in rotations.items():
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise LmpressError(
                f"{where}.online_rotations names {name!r}, not in the model"
            ) from None
        attach_input_rotation(target, rotation_from_spec(spec, f"{where}.online_rotations"))
    if qc.get("kv_cache") is not None:
        try:
            install_kv_quant(model, parse_kv(qc["kv_cache"]))
        except (LmpressError, TypeError) as e:
            raise LmpressError(f"{where}.kv_cache is malformed ({e})") from None
    _check_stored(state, declared, path)
    fill_model(model, state, path)
    check_finite_state(model, str(path))
    model.config.quantization_config = qc
    tok = None
    if with_tokenizer and (path / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(path)
    return model.eval(), tok
