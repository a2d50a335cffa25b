"""Checks on a model's inputs before any work: its files, its tensors, its sizes.

A model that loads with a tensor missing, extra or of the wrong shape would run with
random weights; one with NaN or Inf weights quantizes to garbage; a size beyond what
the model or the machine holds hangs or crashes. Each check raises
:class:`~lmpress.errors.LmpressError` naming the file or tensor and the fix.
"""

import json
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmpress.errors import LmpressError

# The most threads a command accepts, per core: more only thrashes, and OpenMP
# crashes on absurd counts.
MAX_THREADS_PER_CORE = 4
_LAYER_KEY = re.compile(r"(?:^|\.)(?:layers|h|blocks|blk)\.(\d+)\.")


def read_json_file(path: Path) -> Any:
    """``path`` parsed as JSON, or an error naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LmpressError(f"{path}: not UTF-8 text; the file is damaged") from None
    except json.JSONDecodeError as e:
        raise LmpressError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    except OSError as e:
        raise LmpressError(f"cannot read {path}: {e.strerror}") from None


def read_model_config(directory: Path) -> dict[str, Any]:
    """A model directory's ``config.json`` as a dict, or an error naming the file."""
    path = directory / "config.json"
    cfg = read_json_file(path)
    if not isinstance(cfg, dict):
        raise LmpressError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


# The tokenizer's JSON files, read by transformers with errors that do not name them.
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def check_tokenizer_files(directory: Path) -> None:
    """Each of the tokenizer's JSON files present in ``directory`` parses."""
    for name in TOKENIZER_JSON:
        if (directory / name).is_file():
            read_json_file(directory / name)


def safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of one safetensors file, from its header, after checking
    that the header parses and every tensor's bytes lie inside the file (a truncated
    download fails here, naming the file, rather than deep inside the loader)."""
    size = path.stat().st_size

    def damaged(why: str) -> LmpressError:
        return LmpressError(
            f"{path}: not a readable safetensors file ({why}); it is damaged or truncated: "
            "download or write it again"
        )

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise damaged(f"{size} bytes")
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                raise damaged("its header runs past the end")
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError):
        raise damaged("its header is not JSON") from None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    out: dict[str, tuple[int, ...]] = {}
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            out[k] = tuple(int(d) for d in v["shape"])
            end = max(end, int(v["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise damaged(f"tensor {k!r} has no shape or offsets") from None
    if 8 + n + end > size:
        raise damaged(f"{size} bytes, its tensors need {8 + n + end}")
    return out


def safetensors_keys(directory: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor name in ``directory``'s ``*.safetensors`` files and its shape, read
    from the headers only (:func:`safetensors_header`)."""
    out: dict[str, tuple[int, ...]] = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(safetensors_header(f))
    return out


def layer_count(keys: Iterable[str]) -> int | None:
    """One more than the highest block index in tensor names such as
    ``model.layers.7.mlp.up_proj.weight`` or ``blk.7.attn_q.weight``; ``None`` if
    no name has one."""
    idx = [int(m.group(1)) for k in keys if (m := _LAYER_KEY.search(k))]
    return max(idx) + 1 if idx else None


def check_layer_count(declared: Any, stored: int | None, where: str, key: str) -> None:
    """The number of blocks a config declares (``key`` in ``where``) is the number the
    weights hold; checked before a model is built, so that a wrong count is neither
    filled with random blocks nor (for absurd counts) left to hang the build."""
    if stored is None:
        return
    if declared is None:
        raise LmpressError(f"{where} lacks {key}; the weights hold {stored} blocks: add it")
    if not isinstance(declared, int) or isinstance(declared, bool) or declared <= 0:
        raise LmpressError(f"{where}: {key} is {declared!r}; it must be a positive integer")
    if declared != stored:
        raise LmpressError(
            f"{where} says {key}={declared}, but the weights hold {stored} blocks; "
            "the config and the weights belong to different models"
        )


def check_loading_info(info: dict[str, Any], where: str, tied: Iterable[str] = ()) -> None:
    """transformers' loading report (``output_loading_info=True``): any tensor missing
    from the files, unexpected in them, or of another shape is an error naming it.
    ``tied`` are names legitimately absent (an output head tied to the embeddings)."""
    tied = set(tied)
    missing = sorted(set(info.get("missing_keys") or ()) - tied)
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(info.get("mismatched_keys") or ())
    if missing:
        raise LmpressError(
            f"{where} lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:3]}; "
            "the weights are incomplete"
        )
    if unexpected:
        raise LmpressError(
            f"{where} holds {len(unexpected)} tensor(s) the config has no place for, e.g. "
            f"{unexpected[:3]}; the config does not describe these weights"
        )
    if mismatched:
        name, got, want = mismatched[0]
        raise LmpressError(
            f"{where}: {name} is stored as {list(got)} but the config makes it {list(want)}"
        )


def check_finite_state(model: nn.Module, what: str) -> None:
    """Every floating-point parameter and buffer of ``model`` is finite; else an error
    naming the first tensor that is not and how many of its values are NaN or Inf."""
    seen: set[int] = set()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if not t.is_floating_point() or t.device.type == "meta" or id(t) in seen:
            continue
        seen.add(id(t))
        # 8-bit floats (stored scales) have no isfinite kernel; their values fit float32
        finite = torch.isfinite(t if t.element_size() > 1 else t.to(torch.float32))
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise LmpressError(
                f"{what}: {name} holds {bad} NaN/Inf value(s) of {t.numel()}; "
                "lmpress refuses non-finite weights (the source model is damaged)"
            )


def max_positions(config: Any) -> int | None:
    """The most positions ``config``'s model attends over, where it says."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_threads(n: int) -> int:
    """``n`` torch threads, at most :data:`MAX_THREADS_PER_CORE` per core."""
    cores = os.cpu_count() or 1
    limit = MAX_THREADS_PER_CORE * cores
    if n > limit:
        raise LmpressError(f"--threads {n}: this machine has {cores} cores; give at most {limit}")
    return n


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux ``MemAvailable``), or ``None``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
