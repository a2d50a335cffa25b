"""The rows of BENCHMARKS.md's quality tables and the commands that measured them."""

from benchmark_cells import fmt_ppl, fmt_ratio, rss_cell
from benchmark_machines import machine_marker, machines

QUALITY_HEADER = [
    "| scheme | method | bits/weight | perplexity | x reference | KL mean | KL p99 | top-1 "
    "| quantize s | process s | peak RSS MiB |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def quality_row(ref: dict, s: str, m: str, r: dict, known: list[str]) -> str:
    """One cell's table row; ``known`` orders the machine markers as the legend does."""
    return (
        f"| {s} | {m} | {r['bits_per_weight']:.3f} | {fmt_ppl(r['ppl'])} | "
        f"{fmt_ratio(r['ppl'] / ref['ppl'])} | {r['kl_mean']:.4f} | {r['kl_p99']:.3f} | "
        f"{r['top1_agreement']:.3f} | {r['quantize_s']:.1f}{machine_marker(r, known)} | "
        f"{r['process_wall_s']:.1f} | {rss_cell(r)} |"
    )


def quality_rows(ref: dict, by: dict, schemes: list[str], methods: list[str]) -> list[str]:
    """The rows of the measured ``(method, scheme)`` cells, scheme by scheme."""
    known = machines(list(by.values()))
    return [
        quality_row(ref, s, m, by[(m, s)], known) for s in schemes for m in methods if (m, s) in by
    ]


def command_lines(by: dict, schemes: list[str], methods: list[str]) -> list[str]:
    """The command that made each cell, or which cell it repeats."""
    out = []
    for s in schemes:
        for m in methods:
            r = by.get((m, s))
            if r is None:
                continue
            if "same_as" in r:
                twin = r["same_as"].split("|")
                out.append(f"- {s} {m}: the same recipe as {twin[1]} {twin[0]} (not re-run)")
            elif r.get("measured_as", m) != m:
                # run as a preset whose recipe was this method's then and has changed since
                out.append(
                    f"- {s} {m}: `{r['command']}` (at commit {r.get('commit', '?')}, "
                    f"{r['measured_as']} was {m} at {s})"
                )
            else:
                out.append(f"- {s} {m}: `{r['command']}`")
    return out
