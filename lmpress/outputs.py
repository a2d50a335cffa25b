"""Output paths that appear only when complete: checkpoints, exports, reports.

Everything is written under a temporary sibling name and renamed into place at the
end; an existing output is moved aside first and removed only after the new one is
in place, so that a crash at any moment leaves either the old output or the new one,
never a half-written path that looks valid.

What may be replaced is narrow: an output is never an input (nor holds one, nor lies
inside one), and ``overwrite`` replaces only what lmpress wrote: a directory holding
the :data:`MARKER` file (or an lmpress checkpoint from before the marker existed), or
a file that starts with the writer's ``magic``. Temporary siblings left by a killed
run carry its process id and are removed by the next run on the same output.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lmpress.errors import LmpressError

MARKER = ".lmpress-output"  # in every directory lmpress writes: it may be replaced


def check_not_an_input(out: str | Path, inputs: Iterable[str | Path], what: str = "output") -> None:
    """Raise :class:`LmpressError` if ``out`` is one of ``inputs``, contains one, or lies
    inside one (paths that do not exist, such as hub ids, are ignored)."""
    o = Path(out).expanduser().resolve()
    for i in inputs:
        if i is None:
            continue
        p = Path(i).expanduser()
        if not p.exists():
            continue
        p = p.resolve()
        if o == p:
            rel = "is"
        elif o in p.parents:
            rel = "contains"
        elif p in o.parents and p.is_dir():
            rel = "lies inside"
        else:
            continue
        raise LmpressError(f"{what} {out} {rel} the input {i}; choose a path outside the input")


def written_by_lmpress(path: str | Path, magic: bytes | None = None) -> bool:
    """Whether ``path`` is something lmpress wrote and may replace: a directory with the
    marker (or an lmpress checkpoint's ``config.json``), or a file starting with
    ``magic`` (any file when ``magic`` is ``None``)."""
    p = Path(path)
    if p.is_dir():
        if (p / MARKER).is_file():
            return True
        try:
            cfg = json.loads((p / "config.json").read_text())
            return cfg.get("quantization_config", {}).get("quant_method") == "lmpress"
        except (OSError, ValueError, AttributeError):
            return False
    if magic is None:
        return p.is_file()
    try:
        with open(p, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def check_output_path(
    out: str | Path,
    overwrite: bool,
    is_dir: bool = True,
    inputs: Iterable[str | Path] = (),
    magic: bytes | None = None,
) -> None:
    """Raise :class:`LmpressError` if ``out`` cannot become the output (a directory when
    ``is_dir``, else a file): it is, holds or lies inside one of ``inputs``; it exists
    without ``overwrite``, or was not written by lmpress (:func:`written_by_lmpress`);
    it is the other kind; a parent is a file; or the nearest existing parent is not
    writable. Missing parents are fine: :func:`atomic_output` creates them."""
    out = Path(out)
    want = "directory" if is_dir else "file"
    check_not_an_input(out, inputs)
    if out.exists() and out.is_dir() != is_dir:
        kind = "a directory" if out.is_dir() else "a file"
        raise LmpressError(f"output {out} exists and is {kind}; choose a {want} path")
    if out.exists() and not overwrite:
        raise LmpressError(f"output {want} {out} already exists; pass --overwrite to replace it")
    if out.exists() and not written_by_lmpress(out, magic):
        why = f"has no {MARKER} marker" if is_dir else f"does not start with {magic!r}"
        raise LmpressError(
            f"--overwrite replaces only what lmpress wrote, and {out} {why}; "
            "move or delete it yourself, or choose another output path"
        )
    parent = out.expanduser().resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LmpressError(f"cannot create {out}: {probe} is a file")
    if not os.access(probe, os.W_OK):
        raise LmpressError(f"cannot write to {probe}; choose another output path")


@contextmanager
def atomic_output(
    out: str | Path,
    overwrite: bool,
    is_dir: bool = True,
    inputs: Iterable[str | Path] = (),
    magic: bytes | None = None,
) -> Iterator[Path]:
    """Check ``out`` (:func:`check_output_path`), yield a temporary sibling path to write
    to (an empty directory when ``is_dir``, else an empty file), and on success flush it
    to disk and rename it to ``out``; on any error remove it and leave ``out`` as it was.
    A directory gets the :data:`MARKER` file. Temporary siblings of ``out`` left by dead
    processes are removed first. Permissions are the ones a plain ``mkdir`` / ``open``
    would give under the umask."""
    out = Path(out)
    check_output_path(out, overwrite, is_dir, inputs, magic)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    umask = os.umask(0)
    os.umask(umask)
    prefix = f".{out.name}.tmp-{os.getpid()}-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=out.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            (tmp / MARKER).write_text(json.dumps({"written_by": "lmpress"}) + "\n")
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


def remove_stale_temporaries(out: str | Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID-*`` siblings of ``out`` whose process is gone (a run
    killed while writing); a ``.NAME.old-PID`` (a run killed between moving the old
    output aside and renaming the new one in) goes back to ``out`` when ``out`` is
    missing, and is removed otherwise. Returns the paths removed or restored."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.glob(f".{out.name}.*"):
        kind, _, rest = p.name[len(out.name) + 2 :].partition("-")
        if kind not in ("tmp", "old"):
            continue
        pid = rest.split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            p.rename(out)
            removed.append(p)
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
