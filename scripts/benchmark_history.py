"""BENCHMARKS.md's record of cells measured more than once: every measurement of such a
cell side by side, so that a re-run shows what moved (code, machine or neither)."""

import json
from pathlib import Path


def measurements(results: Path, protocol: str) -> dict[str, list[dict]]:
    """Every row of ``results`` (JSON lines) of ``protocol``, by cell, oldest first."""
    by: dict[str, list[dict]] = {}
    for line in results.read_text().splitlines() if results.is_file() else []:
        if line.strip():
            r = json.loads(line)
            if r.get("cell", "").endswith("|" + protocol) and "ppl" in r:
                by.setdefault(r["cell"], []).append(r)
    return by


def history_lines(by_cell: dict[str, list[dict]]) -> list[str]:
    """A table of the cells with two or more measurements: when, which commit, which CPU,
    and the quality figures of each, with the perplexity change from the cell's first."""
    repeated = {c: rows for c, rows in by_cell.items() if len(rows) > 1}
    if not repeated:
        return []
    lines = [
        "## Re-measurements",
        "",
        "Cells measured more than once, every measurement in the order made (the tables "
        "above show the last). A change of commit changes the code; a change of CPU can move "
        "the last bits of BLAS sums, and with them codes on a rounding boundary.",
        "",
        "| cell | date | commit | CPU | bits/weight | perplexity | vs first | KL mean | top-1 "
        "| quantize s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, rows in repeated.items():
        method, scheme = cell.split("|")[:2]
        first = rows[0]["ppl"]
        for r in rows:
            change = f"{100 * (r['ppl'] / first - 1):+.2f}%"
            q = r.get("quantize_s")
            lines.append(
                f"| {method} {scheme} | {r.get('date', '-')} | {r.get('commit', '-')} "
                f"| {r.get('cpu') or 'not recorded'} | {r.get('bits_per_weight', 0):.3f} "
                f"| {r['ppl']:.2f} | {change} | {r.get('kl_mean', float('nan')):.4f} "
                f"| {r.get('top1_agreement', float('nan')):.3f} "
                f"| {'-' if q is None else f'{q:.1f}'} |"
            )
    return ["", *lines]
