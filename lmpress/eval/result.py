"""Evaluation results as typed records, and the JSON rows they become.

Every evaluator returns a frozen dataclass (``PerplexityResult``, ``SizeStats``,
``TaskResult``, ...) that inherits :class:`Record`; ``to_dict()`` is the JSON row
that ``--json`` files, a sweep's ``results.jsonl`` and the benchmark scripts have
always read, key for key and in the same order. :class:`EvalResult` is what
:func:`lmpress.evaluate` and ``lmpress eval`` return: the parts composed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the evaluators import Record from here: names only, no import cycle
    from lmpress.eval.loglik import TaskResult
    from lmpress.eval.perplexity import PerplexityResult
    from lmpress.eval.rolling import RollingPerplexityResult
    from lmpress.eval.size import SizeStats


class Record:
    """Mixin for result dataclasses: :meth:`to_dict` is their flat JSON row.

    Keys come in field order. A field holding another record is inlined in its
    place (its keys, not a nested object: the rows have always been flat). An
    optional field (default ``None``) is left out while unset, because the rows
    only ever carried the figures that were measured; a required field is always
    written, ``null`` included.
    """

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]  (subclasses are dataclasses)
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            if isinstance(value, Record):
                row.update(value.to_dict())
            else:
                row[f.name] = value
        return row


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    """One evaluation of one model: perplexity (any convention), size, tasks.

    ``perplexity`` is a :class:`~lmpress.eval.perplexity.PerplexityResult` for the
    ``gptq`` and ``llamacpp`` conventions, a
    :class:`~lmpress.eval.rolling.RollingPerplexityResult` for ``lm-eval``, ``None``
    when only tasks were scored. ``lmpress_version`` and ``quantize_seconds`` are
    set for lmpress checkpoints (``quantize_seconds`` may be unknown for old ones).
    """

    perplexity: PerplexityResult | RollingPerplexityResult | None = None
    convention: str | None = None
    text: str | None = None
    size: SizeStats | None = None
    peak_rss_mb: float | None = None
    quantize_seconds: float | None = None
    lmpress_version: str | None = None
    tasks: dict[str, TaskResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``lmpress eval --json`` object."""
        row = self.perplexity.to_dict() if self.perplexity is not None else {}
        # setdefault: lm-eval's rolling result already names its convention, first
        for key, value in (("convention", self.convention), ("text", self.text)):
            if value is not None:
                row.setdefault(key, value)
        if self.size is not None:
            row.update(self.size.to_dict())
        if self.peak_rss_mb is not None:
            row["peak_rss_mb"] = self.peak_rss_mb
        if self.lmpress_version is not None:
            # written for every lmpress checkpoint, null when its run info lacks it
            row["quantize_seconds"] = self.quantize_seconds
            row["lmpress_version"] = self.lmpress_version
        if self.tasks:
            row["tasks"] = {name: t.to_dict() for name, t in self.tasks.items()}
        return row
