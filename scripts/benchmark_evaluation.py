"""BENCHMARKS.md's evaluation section: lm-eval agreement, a sweep, the base cache.

Renders ``benchmarks/lm_eval.json`` (``scripts/bench_lm_eval.py``) and
``benchmarks/eval.json`` (``scripts/bench_eval.py``) with the bars they answer.
"""

from typing import Any

from benchmark_cells import mark


def lm_eval_lines(r: dict[str, Any]) -> list[str]:
    """lmpress's zero-shot scorer against lm-evaluation-harness, task by task, and its bar."""
    out = [
        "### Zero-shot scorer against lm-evaluation-harness",
        "",
        f"`{r['command']}`: {r['model']} (float32), the first {r['limit']} examples of each "
        f"task scored by lmpress's scorer and by lm-eval {r['lm_eval_version']}'s own `HFLM` "
        "and evaluator on the same examples (tasks built from the local files; batch size "
        f"{r['batch_size']}). *differing* counts examples whose chosen answer differs.",
        "",
        "| task | n | acc lmpress | acc lm-eval | differing | acc_norm lmpress | "
        "acc_norm lm-eval | differing | lmpress s | lm-eval s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for name, t in r["tasks"].items():
        a, n = t["acc"], t.get("acc_norm")
        ok &= a["differing_examples"] == 0 and (n is None or n["differing_examples"] == 0)
        norm = (
            f"{n['lmpress']:.4f} | {n['lm_eval']:.4f} | {n['differing_examples']}"
            if n
            else "- | - | -"
        )
        out.append(
            f"| {name} | {t['n']} | {a['lmpress']:.4f} | {a['lm_eval']:.4f} | "
            f"{a['differing_examples']} | {norm} | {t['lmpress_s']:.0f} | {t['lm_eval_s']:.0f} |"
        )
    need = {"hellaswag", "piqa", "arc_easy", "winogrande"}
    have = set(r["tasks"]) & need
    out += [
        "",
        f"- Bar (issue 4): identical per-example choices on HellaSwag, PIQA, ARC-Easy and "
        f"WinoGrande with `--limit 500`: {mark(ok and have == need and r['limit'] >= 500)}"
        + ("" if have == need else f" (measured so far: {', '.join(sorted(have))})"),
        "",
    ]
    return out


def sweep_lines(s: dict[str, Any]) -> list[str]:
    """The benchmark's sweep, what the headless browser saw of its page, and its bar."""
    b = s["browser"]
    ok = b["ready"] == "complete" and not b["console_errors"] and not b["broken_images"]
    return [
        "### A sweep and its report",
        "",
        f"`{s['command']}` finished in {s['seconds'] / 60:.1f} min; its output is in "
        "`benchmarks/sweep/` (`report.md`, the self-contained `report.html`, "
        "`results.jsonl`). The HTML page opened in headless Chromium: "
        f"{b['table_rows']} table rows, {b['images']} images "
        f"({len(b['broken_images'])} broken), {b['console_errors']} console errors; "
        f"screenshot `{b['screenshot']}`.",
        "",
        f"- Bar (issue 4): a 6-cell sweep of the default model finishes and its HTML report "
        f"opens in a headless browser without errors: {mark(ok)}",
        "",
    ]


def cache_lines(c: dict[str, Any]) -> list[str]:
    """What evaluating variants against one cached base costs, and its bar."""
    first, cached, plain = c["first_with_base_s"], c["cached_median_s"], c["plain_s"]
    total = c["eight_total_s"]
    uncached8 = 8 * first  # each variant paying for its own base pass, as without a cache
    per_variant = total / 8
    return [
        "### What the base-logits cache saves",
        "",
        f"`{c['command']}`: 8 RTN variants ({', '.join(c['schemes'])}) of the default model, "
        f"each evaluated through `lmpress.evaluate(..., base=...)` (perplexity, KL, top-1; "
        f"ctx {c['ctx']}, {c['windows']} windows, load included) against one base-logits "
        "cache that the first call fills. Seconds, one run, side by side:",
        "",
        "| one variant, perplexity only | first variant + base (fills the cache) | "
        "later variants, median | all 8 | 8 x (variant + base), as without a cache |",
        "|---|---|---|---|---|",
        f"| {plain:.1f} | {first:.1f} | {cached:.1f} | {total:.1f} | {uncached8:.1f} |",
        "",
        f"- A variant against the cached base costs {cached / plain:.2f}x its perplexity-only "
        f"evaluation (the base's forward pass is not repeated; KL adds reading the "
        f"float16 logits); the 8 together cost {total / uncached8:.2f}x what 8 uncached "
        f"evaluations would ({per_variant:.1f} s per variant against {first:.1f} s).",
        f'- Bar (issue 4), read as "per variant, evaluating against the cached base costs '
        f"< 1.5x one variant's own evaluation\" ({cached / plain:.2f}x): "
        f"{mark(cached / plain < 1.5)}. Read literally (all 8 under 1.5x of one variant "
        "plus the base) it would ask 8 model forward passes to cost less than 3, which no "
        "cache can do; the reading above is the one a working cache passes and a missing "
        "cache (about 2x) fails.",
        "",
    ]


def render_evaluation(lm_eval: dict | None, ev: dict | None) -> str:
    """The '## Evaluation' markdown section ('' when nothing was measured)."""
    if not lm_eval and not ev:
        return ""
    out = ["", "## Evaluation (issue 4)", ""]
    if lm_eval:
        out += lm_eval_lines(lm_eval)
    if ev and "sweep" in ev:
        out += sweep_lines(ev["sweep"])
    if ev and "cache" in ev:
        out += cache_lines(ev["cache"])
    return "\n".join(out) + "\n"
