#!/usr/bin/env python3
"""Agreement of lmpress's zero-shot scorer with lm-evaluation-harness (issue 4's bar).

On the reference model (SmolLM2-135M, float32), the first ``--limit`` examples of
each task are scored twice: by lmpress's own scorer (:mod:`lmpress.eval.loglik`)
and by lm-eval's ``HFLM`` + evaluator on the very same examples (tasks built from
local files, see :func:`lmpress.eval.lm_eval_bridge.run_lm_eval`). Per task it
records both accuracies (acc, acc_norm), the number of examples whose chosen answer
differs, and each scorer's wall time. Results: ``benchmarks/lm_eval.json``;
``scripts/benchmark.py`` renders them into BENCHMARKS.md.

    python scripts/bench_lm_eval.py --limit 500 --json benchmarks/lm_eval.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmpress.eval.lm_eval_bridge import run_lm_eval  # noqa: E402
from lmpress.eval.loglik import TaskResult, evaluate_task  # noqa: E402
from lmpress.eval.tasks import TASKS, load_task, parse_task_list  # noqa: E402
from lmpress.models.load import load_model  # noqa: E402

DEFAULT_TASKS = "hellaswag,piqa,arc_easy,winogrande"


def compare(ours: TaskResult, theirs: dict, metrics: tuple[str, ...]) -> dict:
    """Per-metric accuracies of both scorers and how many examples chose differently."""
    row: dict = {"n": ours.n}
    for metric, key in (("acc", "predictions"), ("acc_norm", "predictions_norm")):
        if metric not in metrics:
            continue
        a, b = getattr(ours, key), theirs[key]
        row[metric] = {
            "lmpress": getattr(ours, metric),
            "lm_eval": theirs[metric],
            "differing_examples": sum(x != y for x, y in zip(a, b, strict=True)),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default=DEFAULT_TASKS)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "lm_eval.json")
    args = ap.parse_args()

    import lm_eval

    torch.manual_seed(0)
    loaded = load_model(args.model)
    model, tok = loaded.model.eval(), loaded.tokenizer
    report: dict = {
        "model": args.model,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?",
        "torch_threads": torch.get_num_threads(),
        "command": f"python scripts/bench_lm_eval.py --limit {args.limit} --tasks {args.tasks}",
        "tasks": {},
    }
    for name, path in parse_task_list(args.tasks):
        spec = TASKS.get(name)
        examples = load_task(name, path, args.limit)
        t0 = time.perf_counter()
        ours = evaluate_task(
            model, tok, examples, spec.metrics, spec.kind, args.batch_size, name=name
        )
        t1 = time.perf_counter()
        request = {name: (examples, spec.kind, spec.metrics)}
        theirs = run_lm_eval(model, tok, request, args.batch_size)[name]
        t2 = time.perf_counter()
        row = compare(ours, theirs, spec.metrics)
        row.update(lmpress_s=round(t1 - t0, 1), lm_eval_s=round(t2 - t1, 1), file=str(path.name))
        report["tasks"][name] = row
        print(json.dumps({name: row}), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
