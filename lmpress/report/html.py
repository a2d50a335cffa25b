"""A self-contained HTML report of a sweep: table, Pareto plots, per-layer errors.

Plots are PNGs made by matplotlib and embedded as data URIs, so the page is one
file that opens anywhere (no network, no scripts).
"""

import base64
import datetime as dt
import html
import io
import platform
from pathlib import Path

import torch

from lmpress.__version__ import __version__


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _quality_plots(cells: list[dict], ref_ppl: float) -> list[tuple[str, str]]:
    """(title, data URI): perplexity and KL against bits per weight and against size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    methods = sorted({r["method"] for r in cells})
    keys = [("ppl", "perplexity"), ("kl_mean", "mean KL divergence")]
    if all("task_mean_acc" in r for r in cells):
        keys.append(("task_mean_acc", "mean zero-shot accuracy"))
    for key, label in keys:
        for xkey, xlabel in (
            ("bits_per_weight", "bits per weight"),
            ("size_bytes", "size on disk (MB)"),
        ):
            fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
            for m in methods:
                pts = sorted((r[xkey], r[key]) for r in cells if r["method"] == m and xkey in r)
                scale = 1e-6 if xkey == "size_bytes" else 1.0
                ax.plot([p[0] * scale for p in pts], [p[1] for p in pts], marker="o", label=m)
            if key == "ppl":
                ax.axhline(ref_ppl, color="black", linestyle=":", label="float")
            if key != "task_mean_acc":
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            out.append((f"{label} against {xlabel}", _png(fig)))
    return out


def _layer_plot(row: dict, top: int = 20) -> str | None:
    """Bar chart of the modules that lost the most in one cell: relative output error on
    the calibration set where the method measured it, else relative weight error."""
    errs, what = row.get("layer_errors") or {}, "||dW X||^2 / ||W X||^2 on the calibration set"
    if not errs:
        errs, what = row.get("weight_errors") or {}, "||dW||^2 / ||W||^2 (weights)"
    if not errs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = sorted(errs.items(), key=lambda kv: -kv[1])[:top]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(worst) + 1), dpi=100)
    ax.barh([k.replace("model.layers.", "L") for k, _ in worst][::-1], [v for _, v in worst][::-1])
    ax.set_xlabel(f"relative error {what}")
    ax.set_title(f"{row['method']} {row['scheme']}: the {len(worst)} worst modules", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return _png(fig)


def provenance(rows: list[dict]) -> list[tuple[str, str]]:
    """Distinct (command, "lib version, ...") pairs of sweep ``rows``, in row order."""
    seen: dict[str, dict] = {}
    for r in rows:
        seen.setdefault(r.get("command") or "(command not recorded)", r.get("versions") or {})
    return [
        (cmd, ", ".join(f"{k} {x}" for k, x in v.items()) if v else "versions not recorded")
        for cmd, v in seen.items()
    ]


def speed_cells(r: dict) -> tuple[str, str, str]:
    """Prefill tok/s, decode tok/s, peak RSS MiB of a sweep row, as table text ('-' if absent)."""
    sp = r.get("speed")
    if not sp:
        return "-", "-", "-"
    return (
        f"{sp['prefill_tokens_per_s']:.0f}",
        f"{sp['decode_tokens_per_s']:.1f}",
        f"{sp['peak_rss_mb']:.0f}",
    )


def _speed_tds(r: dict) -> str:
    return "".join(f"<td>{v}</td>" for v in speed_cells(r))


def write_html(rows: list[dict], out: Path, protocol: str, model: str) -> Path:
    """Write ``out/report.html``; returns its path."""
    ref = next((r for r in rows if r["method"] == "float"), None)
    cells = sorted(
        (r for r in rows if r["method"] != "float"), key=lambda r: (-r["bits_per_weight"], r["ppl"])
    )
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>lmpress sweep: {e(model)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
        "img{max-width:100%;border:1px solid #eee;margin:6px 0}</style></head><body>",
        f"<h1>lmpress sweep: {e(model)}</h1>",
        f"<p>Protocol: {e(protocol)}. KL divergence and top-1 agreement against the float "
        "model on the same windows; bits per weight count every stored bit of the quantized "
        "modules.</p>",
        "<table><tr><th>method</th><th>scheme</th><th>bits/weight</th><th>size MB</th>"
        "<th>perplexity</th><th>KL mean</th><th>KL p99</th><th>top-1</th><th>quantize s</th>"
        "<th>prefill tok/s</th><th>decode tok/s</th><th>peak RSS MiB</th></tr>",
    ]
    if ref:
        parts.append(
            f"<tr><td>float</td><td>-</td><td>32</td><td>-</td><td>{ref['ppl']:.3f}</td>"
            "<td>0</td><td>0</td><td>1.000</td><td>-</td>" + _speed_tds(ref) + "</tr>"
        )
    for r in cells:
        parts.append(
            f"<tr><td>{e(r['method'])}</td><td>{e(r['scheme'])}</td>"
            f"<td>{r['bits_per_weight']:.3f}</td><td>{r.get('size_bytes', 0) / 1e6:.1f}</td>"
            f"<td>{r['ppl']:.3f}</td><td>{r['kl_mean']:.4f}</td><td>{r['kl_p99']:.3f}</td>"
            f"<td>{r['top1_agreement']:.3f}</td><td>{r['quantize_s']:.1f}</td>"
            + _speed_tds(r)
            + "</tr>"
        )
    parts.append("</table>")
    if ref and cells:
        parts.append("<h2>Quality against size</h2>")
        for title, uri in _quality_plots(cells, ref["ppl"]):
            parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='{uri}'>")
    layer = [(r, _layer_plot(r)) for r in cells]
    if any(uri for _, uri in layer):
        parts.append("<h2>Which modules lost the most</h2>")
        for r, uri in layer:
            if uri:
                parts.append(
                    f"<img alt='layer errors {e(r['method'])} {e(r['scheme'])}' src='{uri}'>"
                )
    parts.append("<h2>Commands and versions</h2>")
    parts.append(
        "<p>The commands that measured these rows (a sweep skips cells it already has, so "
        "rerunning one reproduces any missing cell; one cell alone: the same command with "
        "<code>--schemes S --methods M</code>):</p><ul>"
    )
    for cmd, vers in provenance(rows):
        parts.append(f"<li><code>{e(cmd)}</code> ({e(vers)})</li>")
    parts.append(
        f"</ul><p>Page written by lmpress {e(__version__)}, torch {e(torch.__version__)}, Python "
        f"{e(platform.python_version())}, written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC."
        "</p></body></html>"
    )
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
