"""lmpress inside lm-evaluation-harness, and lm-eval on lmpress's own task files.

Two directions:

- ``lm_eval --model lmpress --model_args path=out/smol-w4`` (after
  ``import lmpress.eval.lm_eval_bridge``, or through :func:`register_lm_eval_model`):
  an lmpress checkpoint as lm-eval's ``HFLM``; :func:`hflm` wraps a loaded model
  (plain ``HFLM(pretrained=...)`` refuses it: it hands every ``quantization_config``
  to transformers, which does not know lmpress's).
- :func:`run_lm_eval` scores lmpress's :class:`~lmpress.eval.tasks.MCExample` s with
  lm-eval's own machinery (tasks built from local JSON files, nothing from the
  hub), so that lmpress's scorer can be checked against lm-eval example by example.

``lm-eval`` is an optional dependency (``pip install lm-eval``).
"""

import json
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from lmpress.errors import LmpressError
from lmpress.eval.tasks import MCExample


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise LmpressError(
            "this needs lm-evaluation-harness: pip install lm-eval (an optional dependency)"
        ) from None


def _task_config(name: str, data_file: Path, ex: MCExample, kind: str, metrics) -> dict:
    metric_list = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics]
    cfg: dict[str, Any] = {
        "task": f"lmpress_{name}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "target_delimiter": ex.delimiter,
    }
    if kind == "greedy":
        cfg.update(
            output_type="loglikelihood",
            doc_to_text=lambda d: d["contexts"][0],
            doc_to_target=lambda d: d["continuations"][0],
            metric_list=[
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            ],
        )
    elif len(ex.contexts) > 1:  # partial scoring: contexts differ, continuation shared
        cfg.update(
            output_type="multiple_choice",
            doc_to_text=lambda d: d["gold"],
            doc_to_choice=lambda d: d["contexts"],
            doc_to_target=lambda d: d["continuations"][0],
            metric_list=metric_list,
        )
    else:
        cfg.update(
            output_type="multiple_choice",
            doc_to_text=lambda d: d["contexts"][0],
            doc_to_choice=lambda d: d["continuations"],
            doc_to_target=lambda d: d["gold"],
            metric_list=metric_list,
        )
    return cfg


def run_lm_eval(
    model: nn.Module,
    tokenizer,
    tasks: dict[str, tuple[list[MCExample], str, tuple[str, ...]]],
    batch_size: int = 16,
) -> dict[str, dict[str, Any]]:
    """Score ``{name: (examples, kind, metrics)}`` with lm-eval's HFLM and evaluator.

    Returns per task the aggregated metrics and ``predictions``: per example, the
    index of the choice with the highest log-likelihood (for greedy tasks, 1 when
    the continuation is the greedy one).
    """
    _require_lm_eval()
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.evaluator import evaluate

    lm = hflm(model, tokenizer, batch_size=batch_size)
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lmpress-lmeval-") as tmp:
        task_dict = {}
        for name, (examples, kind, metrics) in tasks.items():
            f = Path(tmp) / f"{name}.jsonl"
            with open(f, "w", encoding="utf-8") as fh:
                for e in examples:
                    row = {"contexts": e.contexts, "continuations": e.continuations, "gold": e.gold}
                    fh.write(json.dumps(row) + "\n")
            cfg = _task_config(name, f, examples[0], kind, metrics)
            task_dict[f"lmpress_{name}"] = ConfigurableTask(config=cfg)
        res = evaluate(lm=lm, task_dict=task_dict, log_samples=True, verbosity="ERROR")
    for name, (_examples, kind, _metrics) in tasks.items():
        key = f"lmpress_{name}"
        agg = {k.split(",")[0]: v for k, v in res["results"][key].items() if "," in k}
        samples = sorted(res["samples"][key], key=lambda s: s["doc_id"])
        if kind == "greedy":
            preds = [int(s["filtered_resps"][0][1]) for s in samples]
            out[name] = {**agg, "predictions": preds}
            continue
        preds, preds_norm = [], []
        for s in samples:
            lls = [r[0] if isinstance(r, (list, tuple)) else r for r in s["filtered_resps"]]
            doc = s["doc"]
            texts = doc["continuations"] if len(doc["continuations"]) > 1 else doc["contexts"]
            normed = [ll / max(float(len(t)), 1.0) for ll, t in zip(lls, texts, strict=True)]
            preds.append(max(range(len(lls)), key=lambda j: lls[j]))
            preds_norm.append(max(range(len(normed)), key=lambda j: normed[j]))
        out[name] = {**agg, "predictions": preds, "predictions_norm": preds_norm}
    return out


def hflm(model: nn.Module, tokenizer, **kwargs):
    """lm-eval's ``HFLM`` around an in-memory (lmpress or plain) transformers model."""
    _require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    config = getattr(model, "config", None)
    qc = getattr(config, "quantization_config", None)
    ours = isinstance(qc, dict) and qc.get("quant_method") == "lmpress"
    if ours:
        del config.quantization_config  # HFLM would hand it to transformers' quantizers
    try:
        return HFLM(pretrained=model, tokenizer=tokenizer, **kwargs)
    finally:
        if ours:
            config.quantization_config = qc


def register_lm_eval_model() -> None:
    """Register ``lmpress`` as an lm-eval model name (``--model lmpress --model_args path=...``)."""
    _require_lm_eval()
    from lm_eval.api.registry import MODEL_REGISTRY, register_model
    from lm_eval.models.huggingface import HFLM

    if "lmpress" in MODEL_REGISTRY:
        return

    def make(path: str, **kwargs):
        import lmpress

        model, tok = lmpress.load(path, with_tokenizer=True)
        return hflm(model, tok, **kwargs)

    class LmpressLM(HFLM):
        """An lmpress checkpoint directory as an lm-eval model (builds a plain ``HFLM``)."""

        def __new__(cls, path: str, **kwargs):
            return make(path, **kwargs)

        @classmethod
        def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
            from lm_eval.utils import simple_parse_args_string

            args = simple_parse_args_string(arg_string)
            args.update({k: v for k, v in (additional_config or {}).items() if v is not None})
            return make(**args)

    register_model("lmpress")(LmpressLM)


def run_lm_eval_wikitext(model: nn.Module, tokenizer, documents: list[str], batch_size: int = 4):
    """lm-eval's own ``wikitext`` task (its detokenizer, windows and metrics) on ``documents``.

    Returns lm-eval's ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte``.
    """
    _require_lm_eval()
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks.wikitext import preprocess_wikitext as wt

    lm = hflm(model, tokenizer, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="lmpress-lmeval-") as tmp:
        f = Path(tmp) / "wikitext.jsonl"
        f.write_text("".join(json.dumps({"page": d}) + "\n" for d in documents), encoding="utf-8")
        cfg = {
            "task": "lmpress_wikitext",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(f)}},
            "test_split": "test",
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": wt.wikitext_detokenizer,
            "process_results": wt.process_results,
            "metric_list": [
                {"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")
            ],
        }
        res = evaluate(lm=lm, task_dict={"w": ConfigurableTask(config=cfg)}, verbosity="ERROR")
    return {k.split(",")[0]: v for k, v in res["results"]["w"].items() if "," in k}
