"""Locating the evaluation and calibration texts, and reading them by the protocol.

Built-in names resolve to files under the shared data directory: the
``LMPRESS_DATA_DIR`` environment variable if set, else ``../shared/data`` next
to the checkout or the working directory. Anything else is a path to a text file.
"""

import os
from pathlib import Path

from lmpress.errors import LmpressError

# name -> (file for evaluation, file for calibration), relative to the data dir
DATASETS = {
    "wikitext2": ("wikitext-2-raw/wiki.test.raw", "wikitext-2-tokenized/valid.txt"),
    "ptb": ("ptb/ptb.test.txt", "ptb/ptb.test.txt"),
}


def data_dir() -> Path | None:
    """The shared data directory, or None when it cannot be found."""
    env = os.environ.get("LMPRESS_DATA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for base in (here, Path.cwd(), *Path.cwd().parents):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def resolve_text(name_or_path: str, purpose: str = "eval") -> Path:
    """Path of a built-in dataset's file for ``purpose`` ('eval' or 'calib'), or a user path."""
    if name_or_path in DATASETS:
        d = data_dir()
        rel = DATASETS[name_or_path][0 if purpose == "eval" else 1]
        if d is not None and (d / rel).is_file():
            return d / rel
        hub = _from_hub(name_or_path, purpose)
        if hub is not None:
            return hub
        raise LmpressError(
            f"dataset {name_or_path!r} not found locally (looked for {rel}); set "
            "LMPRESS_DATA_DIR to the folder holding it, pass a text file path, or install "
            "the `datasets` package to fetch it from the Hugging Face hub"
        )
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        known = ", ".join(DATASETS)
        raise LmpressError(f"text {name_or_path!r} is neither a file nor a known dataset ({known})")
    return p


# name -> (hub dataset, config, split for eval, split for calibration, text column)
_HUB = {"wikitext2": ("wikitext", "wikitext-2-raw-v1", "test", "train", "text")}


def _from_hub(name: str, purpose: str) -> Path | None:
    """Fetch a built-in dataset with ``datasets`` (optional) into the lmpress cache.

    Hub rows are written one per line, so the protocol (rows joined by blank
    lines) applies unchanged. Returns None when ``datasets`` is absent, the name
    has no hub source, or the hub cannot be reached.
    """
    if name not in _HUB or os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        import datasets  # optional: not a dependency of lmpress
    except ImportError:
        return None
    repo, config, eval_split, calib_split, column = _HUB[name]
    split = eval_split if purpose == "eval" else calib_split
    root = Path(os.environ.get("LMPRESS_CACHE_DIR", Path.home() / ".cache" / "lmpress"))
    out = root / "data" / f"{name}-{split}.txt"
    if out.is_file():
        return out
    try:
        rows = datasets.load_dataset(repo, config, split=split)[column]
    except Exception:  # noqa: BLE001  (offline, or the hub refused: fall back to the error)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    # Blank rows are dropped: the shared copy of the test text has none either.
    tmp.write_text("".join(r.rstrip("\n") + "\n" for r in rows if r.strip()), encoding="utf-8")
    tmp.rename(out)
    return out


def read_text_file(path: Path) -> str:
    """The file's text (UTF-8), or an error naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmpressError(
            f"{path} is not UTF-8 text (byte {e.start}); give a plain text file"
        ) from None
    except OSError as e:
        raise LmpressError(f"cannot read {path}: {e.strerror}") from None


def read_rows_joined(path: Path) -> str:
    """The protocol's text: the file's rows (line endings stripped) joined by blank lines."""
    rows = [line.rstrip("\r") for line in read_text_file(path).split("\n")]
    if rows and rows[-1] == "":
        rows.pop()  # the newline that ends the last row starts no row
    return "\n\n".join(rows)
