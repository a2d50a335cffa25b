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
        if d is None or not (d / rel).is_file():
            raise LmpressError(
                f"dataset {name_or_path!r} not found locally (looked for {rel}); set "
                "LMPRESS_DATA_DIR to the folder holding it, or pass a text file path"
            )
        return d / rel
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        known = ", ".join(DATASETS)
        raise LmpressError(f"text {name_or_path!r} is neither a file nor a known dataset ({known})")
    return p


def read_rows_joined(path: Path) -> str:
    """The protocol's text: the file's rows (line endings stripped) joined by blank lines."""
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\r\n") for line in f]
    return "\n\n".join(rows)
