"""On-disk cache of the base model's logits, so that many variants compare cheaply.

Layout: ``<cache_dir>/<key>/window_<i>.npy`` holding float16 logits
``[ctx - 1, vocab]`` (the positions that predict a next token) for window
``i``, plus ``meta.json`` with the token ids' hash. float16 keeps a 135M-vocab
window at 0.2 GB; its rounding (relative 5e-4) moves KL by far less than the
differences between quantized variants. The key hashes the base model's path,
size and mtime, the evaluated text's ids and the context length.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch


def default_cache_dir() -> Path:
    return (
        Path(os.environ.get("LMPRESS_CACHE_DIR", Path.home() / ".cache" / "lmpress"))
        / "base_logits"
    )


def cache_key(base_source: str, ids: torch.Tensor, ctx: int) -> str:
    h = hashlib.sha256()
    p = Path(base_source)
    h.update(str(p.resolve() if p.exists() else base_source).encode())
    if p.is_file():
        st = p.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    elif p.is_dir():
        for f in sorted(p.glob("*.safetensors")) + [p / "config.json"]:
            if f.is_file():
                h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    h.update(ids.numpy().tobytes())
    h.update(str(ctx).encode())
    return h.hexdigest()[:20]


class BaseLogitsCache:
    def __init__(self, key: str, root: Path | None = None) -> None:
        self.dir = (root or default_cache_dir()) / key

    def path(self, i: int) -> Path:
        return self.dir / f"window_{i}.npy"

    def has(self, n: int) -> bool:
        return all(self.path(i).is_file() for i in range(n))

    def put(self, i: int, logits: torch.Tensor) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".window_{i}.{os.getpid()}.npy"
        np.save(tmp, logits.to(torch.float16).numpy())
        tmp.rename(self.path(i))

    def get(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.load(self.path(i)))

    def write_meta(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "meta.json").write_text(json.dumps(meta))
