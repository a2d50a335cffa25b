"""Evaluation: perplexity, agreement with the base model, size; results as records."""

from lmpress.eval.perplexity import (
    AgreementStats,
    PerplexityResult,
    PplRatio,
    eval_ids,
    evaluate_perplexity,
)
from lmpress.eval.result import EvalResult, Record
from lmpress.eval.size import SizeStats, model_size_stats

__all__ = [
    "AgreementStats",
    "EvalResult",
    "PerplexityResult",
    "PplRatio",
    "Record",
    "SizeStats",
    "eval_ids",
    "evaluate_perplexity",
    "model_size_stats",
]
