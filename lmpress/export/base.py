"""Exporters: write a compressed model in another ecosystem's format. One registry.

An exporter is a function ``(model, tokenizer, out, options) -> summary`` where
``model`` is a loaded lmpress model (``QLinear`` modules), ``out`` a path that
does not exist yet (files are written under a temporary name and renamed at the
end), and ``summary`` a JSON-able dict: what was written, and for every tensor
whether it is exact or how far it moved.
"""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from lmpress.errors import LmpressError
from lmpress.registry import Registry

Exporter = Callable[[nn.Module, Any, Path, dict[str, Any]], dict[str, Any]]
EXPORTERS: Registry[Exporter] = Registry("export format")


@contextmanager
def atomic_output(out: Path, overwrite: bool, is_dir: bool) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``out``, on error it is removed."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise LmpressError(f"{out} already exists; pass --overwrite to replace it")
    if out.exists() and out.is_dir() != is_dir:
        kind = "a directory" if out.is_dir() else "a file"
        raise LmpressError(f"{out} exists and is {kind}; choose another output path")
    if not out.parent.exists():
        raise LmpressError(f"folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise LmpressError(f"cannot write to {out.parent}; choose another output path")
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.chmod(tmp, 0o755 if is_dir else 0o644)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
