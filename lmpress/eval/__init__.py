"""Evaluation: perplexity, agreement with the base model, size."""

from lmpress.eval.perplexity import eval_ids, evaluate_perplexity
from lmpress.eval.size import model_size_stats

__all__ = ["eval_ids", "evaluate_perplexity", "model_size_stats"]
