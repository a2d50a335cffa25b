"""Zero-shot multiple-choice tasks, rendered the way lm-evaluation-harness renders them.

Each task turns its data file into :class:`MCExample` s: one context and several
continuations (or, for WinoGrande's partial scoring, several contexts and one
continuation). Prompts, delimiters and metrics follow lm-eval's task definitions
(``hellaswag``, ``piqa``, ``arc_easy``, ``arc_challenge``, ``winogrande``,
``boolq``, ``lambada_openai``) so that the numbers can be put beside published
ones; the scorer is :mod:`lmpress.eval.loglik`.

Files come from the shared data directory (``LMPRESS_DATA_DIR`` or
``../shared/data``, formats in its PROVENANCE.md) or from a path given as
``task=path`` on the command line.
"""

import bz2
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmpress.data import data_dir
from lmpress.errors import LmpressError
from lmpress.registry import Registry


@dataclass
class MCExample:
    """One item: score ``delimiter + continuation`` after each context.

    Plain tasks have one context and one continuation per choice; partial scoring
    (WinoGrande) has one context per choice and a single shared continuation.
    """

    contexts: list[str]
    continuations: list[str]
    gold: int
    delimiter: str = " "

    def requests(self) -> list[tuple[str, str]]:
        """``(context, continuation)`` pairs, one per choice."""
        n = max(len(self.contexts), len(self.continuations))
        ctxs = self.contexts * n if len(self.contexts) == 1 else self.contexts
        conts = self.continuations * n if len(self.continuations) == 1 else self.continuations
        return [(c, self.delimiter + t) for c, t in zip(ctxs, conts, strict=True)]

    @property
    def choice_texts(self) -> list[str]:
        """What ``acc_norm`` divides by (lm-eval: the choice's characters, no delimiter)."""
        return self.continuations if len(self.continuations) > 1 else self.contexts


@dataclass(frozen=True)
class TaskSpec:
    load: Callable[[Path], list[MCExample]]
    default_file: str  # relative to the shared data dir
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    # lambada-style: one continuation, scored for greedy match and perplexity
    kind: str = "multiple_choice"


TASKS: Registry[TaskSpec] = Registry("task")


def register_task(name: str, default_file: str, **kw):
    def deco(fn: Callable[[Path], list[MCExample]]):
        TASKS.register(name)(TaskSpec(fn, default_file, **kw))
        return fn

    return deco


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _labels(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleaning: drop WikiHow ``[title]``-style tags and double spaces."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


@register_task("hellaswag", "hellaswag/hellaswag_val_full.txt.bz2")
def load_hellaswag(path: Path) -> list[MCExample]:
    """The 6-lines-per-item text rendering: ``label: context``, gold index, 4 endings."""
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise LmpressError(f"{path}: expected 6 lines per HellaSwag item, got {len(lines)} lines")
    out = []
    for i in range(0, len(lines), 6):
        ctx, gold, *endings = lines[i : i + 6]
        out.append(
            MCExample(
                [hellaswag_preprocess(ctx)],
                [hellaswag_preprocess(e) for e in endings],
                int(gold),
            )
        )
    return out


@register_task("piqa", "piqa/valid.jsonl")
def load_piqa(path: Path) -> list[MCExample]:
    labels = _labels(path.with_name(path.stem + "-labels.lst"))
    rows = _jsonl(path)
    return [
        MCExample([f"Question: {r['goal']}\nAnswer:"], [r["sol1"], r["sol2"]], lab)
        for r, lab in zip(rows, labels, strict=True)
    ]


def _load_arc(path: Path) -> list[MCExample]:
    out = []
    for r in _jsonl(path):
        q = r["question"]
        labels = [c["label"] for c in q["choices"]]
        out.append(
            MCExample(
                [f"Question: {q['stem']}\nAnswer:"],
                [c["text"] for c in q["choices"]],
                labels.index(r["answerKey"]),
            )
        )
    return out


register_task("arc_easy", "arc/ARC-Easy-Test.jsonl")(_load_arc)
register_task("arc_challenge", "arc/ARC-Challenge-Test.jsonl")(_load_arc)


@register_task("winogrande", "winogrande/dev.jsonl", metrics=("acc",))
def load_winogrande(path: Path) -> list[MCExample]:
    """Partial scoring: the blank filled with each option is the context; the rest of the
    sentence after the blank is the continuation scored under both."""
    out = []
    for r in _jsonl(path):
        s = r["sentence"]
        i = s.index("_")
        out.append(
            MCExample(
                [s[:i] + r["option1"], s[:i] + r["option2"]],
                [s[i + 1 :].strip()],
                int(r["answer"]) - 1,
            )
        )
    return out


@register_task("boolq", "boolq/dev.jsonl", metrics=("acc",))
def load_boolq(path: Path) -> list[MCExample]:
    return [
        MCExample(
            [f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:"],
            ["no", "yes"],
            int(r["answer"]),
        )
        for r in _jsonl(path)
    ]


@register_task(
    "lambada_openai", "lambada/lambada_test.jsonl", metrics=("acc", "ppl"), kind="greedy"
)
def load_lambada(path: Path) -> list[MCExample]:
    """The last word after the rest of the passage (no extra delimiter: it carries its space)."""
    out = []
    for r in _jsonl(path):
        words = r["text"].split(" ")
        out.append(MCExample([" ".join(words[:-1])], [" " + words[-1]], 0, delimiter=""))
    return out


def parse_task_list(spec: str) -> list[tuple[str, Path]]:
    """``"piqa,hellaswag=/path/file"`` -> ``[(name, file), ...]``, files checked."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, sep, given = item.partition("=")
        task = TASKS.get(name)
        if sep:
            path = Path(given).expanduser()
        else:
            d = data_dir()
            path = d / task.default_file if d is not None else Path(task.default_file)
        if not path.is_file():
            raise LmpressError(
                f"task {name!r}: data file {path} not found; pass {name}=PATH or set "
                "LMPRESS_DATA_DIR to the shared data folder"
            )
        out.append((name, path))
    if not out:
        raise LmpressError("--tasks is empty; name tasks, e.g. --tasks piqa,hellaswag")
    return out


def load_task(name: str, path: Path, limit: int | None = None) -> list[MCExample]:
    """The first ``limit`` examples of task ``name`` from ``path``."""
    try:
        examples = TASKS.get(name).load(path)
    except LmpressError:
        raise
    except (KeyError, ValueError, json.JSONDecodeError, OSError) as e:
        raise LmpressError(f"task {name!r}: cannot read {path}: {type(e).__name__}: {e}") from e
    if not examples:
        raise LmpressError(f"task {name!r}: {path} holds no examples")
    return examples[:limit] if limit else examples
