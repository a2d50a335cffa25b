"""Output paths that appear only when complete: checkpoints, exports, reports.

Everything is written under a temporary sibling name and renamed into place at the
end; an existing output is moved aside first and removed only after the new one is
in place, so that a crash at any moment leaves either the old output or the new one,
never a half-written path that looks valid.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmpress.errors import LmpressError


def check_output_path(out: str | Path, overwrite: bool, is_dir: bool = True) -> None:
    """Raise :class:`LmpressError` if ``out`` cannot become the output (a directory when
    ``is_dir``, else a file): it exists without ``overwrite``, it is the other kind, a
    parent is a file, or the nearest existing parent is not writable. Missing parents
    are fine: :func:`atomic_output` creates them."""
    out = Path(out)
    want = "directory" if is_dir else "file"
    if out.exists() and out.is_dir() != is_dir:
        kind = "a directory" if out.is_dir() else "a file"
        raise LmpressError(f"output {out} exists and is {kind}; choose a {want} path")
    if out.exists() and not overwrite:
        raise LmpressError(f"output {want} {out} already exists; pass --overwrite to replace it")
    parent = out.expanduser().resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LmpressError(f"cannot create {out}: {probe} is a file")
    if not os.access(probe, os.W_OK):
        raise LmpressError(f"cannot write to {probe}; choose another output path")


@contextmanager
def atomic_output(out: str | Path, overwrite: bool, is_dir: bool = True) -> Iterator[Path]:
    """Check ``out`` (:func:`check_output_path`), yield a temporary sibling path to write
    to (an empty directory when ``is_dir``, else an empty file), and on success flush it
    to disk and rename it to ``out``; on any error remove it and leave ``out`` as it was.
    Permissions are the ones a plain ``mkdir`` / ``open`` would give under the umask."""
    out = Path(out)
    check_output_path(out, overwrite, is_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkdtemp and mkstemp make private paths; give the published one the usual mode
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)
        _fsync_tree(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            tmp.rename(out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(p: Path) -> None:
    """Flush ``p`` (a file, or every file under a directory) to disk, so that the
    rename publishes complete files."""
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if p.is_dir():
        _fsync_dir(p)
