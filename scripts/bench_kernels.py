#!/usr/bin/env python3
"""GEMV benchmark: float32 torch, torch's int4 CPU kernel and lmpress's packed-code kernel.

For each shape ``[N, K]`` (out x in) and batch size, times ``y = x @ W.T`` with
``x [M, K]``: float32 ``F.linear``, ``torch.ops.aten._weight_int4pack_mm_for_cpu``
(4-bit, groups of 128, or 64 where 128 does not divide K) and lmpress's ``cpu``
kernel at 8, 4, 3 and 2 bits (asymmetric, groups of 128, a partial last group
where 128 does not divide K). Two regimes:

- ``cold``: calls cycle through enough copies of the weight (>= 1 GiB in all) that
  each call reads its weight from memory, as decoding a model does;
- ``warm``: the same weight every call (it may sit in the cache).

With ``--grid`` the same run also times the grid formats NVFP4, MXFP4, NF4 (groups of
64) and a learned 16-value grid (``lut4``) through lmpress's table-lookup kernel, side by
side with the integer 4-bit rows (``w4g128``, and ``w4g64`` at NF4's group size), and the
JSON records each grid row's time over ``w4g128``'s at its shape, batch size and regime
(``grid_vs_int4``, against the bar ``GRID_BAR``); ``--grid-only`` times just those rows.

Medians over repeated timings after warm-up, in ``--processes`` (3) fresh processes
run one after another and pooled; effective GB/s = bytes the method
stores for the weight / time, against a plain large copy (read + write) of the
same machine, measured in the same run. Results: JSON (``--json``) for
``scripts/benchmark.py`` to render.

    python scripts/bench_kernels.py --json benchmarks/kernels.json
    python scripts/bench_kernels.py --grid-only --json benchmarks/kernels-grid.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# OpenMP threads bound to cores, for every method alike (torch's kernels and lmpress's
# share one OpenMP runtime); set before torch loads it, so that no run depends on where
# the scheduler put the threads. It does not remove the slower state some processes of
# this VM run in (2-thread calls at small shapes up to twice as long, torch int4
# included): that is what pooling processes (measure_in_processes) is for.
os.environ.setdefault("OMP_PROC_BIND", "true")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from kernel_runs import merge_kernel_runs, speedup  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmpress.formats.affine import expand_to_columns, minmax_qparams, quantize_codes  # noqa: E402
from lmpress.formats.scheme import parse_scheme  # noqa: E402
from lmpress.kernels.cpu import (  # noqa: E402
    GEMM_MAX_ROWS,
    CpuKernel,
    build_info,
    cpu_dequantize,
    cpu_gemm,
    source_digest,
)
from lmpress.kernels.grid import GridState, grid_dequantize, grid_gemm  # noqa: E402
from lmpress.methods.rtn import rtn  # noqa: E402
from lmpress.packing.packed import PackedWeight  # noqa: E402
from lmpress.report.machine import cpu_name  # noqa: E402

# SmolLM2-135M's linear shapes (out, in), then two 7B-class layers.
SHAPES = [
    (576, 576),
    (192, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
    (4096, 4096),
    (11008, 4096),
    (4096, 11008),
]
BITS = [8, 4, 3, 2]
COLD_BYTES = 1 << 30
# Grid formats timed with --grid, and the integer 4-bit row each is compared with.
GRID_SCHEMES = {"nvfp4": "w4g128", "mxfp4": "w4g128", "nf4g64": "w4g128", "lut4": "w4g128"}
# The bar: a 16-value grid format's batch-1 GEMV within this factor of the
# integer 4-bit path's time at the same shape.
GRID_BAR = 1.25


def memory_bandwidth_gbs(repeats: int) -> float:
    """GB/s of a 1 GiB float32 copy (bytes read + bytes written), median of ``repeats``."""
    src = torch.ones(COLD_BYTES // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * COLD_BYTES / statistics.median(times) / 1e9


def timed(cases: list[tuple], repeats: int, min_calls: int) -> list[list[float]]:
    """Seconds per call of each ``(fn, states)`` case in every repetition, cycling ``fn``
    through its ``states``. The cases take turns within every repetition, so that a slow
    spell of this shared machine falls on all of them alike: ratios of two cases are
    taken per repetition (paired) before their median."""
    for fn, states in cases:
        for s in states[: min(len(states), 3)]:
            fn(s)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for c, (fn, states) in enumerate(cases):
            calls = max(min_calls, len(states))
            t0 = time.perf_counter()
            for i in range(calls):
                fn(states[i % len(states)])
            times[c].append((time.perf_counter() - t0) / calls)
    return times


def lmpress_packed(w: torch.Tensor, bits: int, group: int) -> PackedWeight:
    scheme = parse_scheme(f"w{bits}g{group}")
    s, z = minmax_qparams(w, scheme)
    k = w.shape[1]
    q = quantize_codes(
        w, expand_to_columns(s, k, scheme), expand_to_columns(z, k, scheme), 2**bits - 1
    )
    return PackedWeight.from_codes(q, {"scale": s, "zero": z}, scheme)


def torch_int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's CPU int4 layout: packed codes and bf16 [K/group, N, 2] scales and zeros."""
    n, k = w.shape
    g = w.reshape(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    q = torch.clamp(torch.round((g - lo[..., None]) / scale[..., None]), 0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(n, k), 1)
    # torch decodes (q - 8) * scale + zero
    zero = lo + 8 * scale
    sz = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, sz


def clone_state(st):  # noqa: ANN001, ANN201
    """A copy of a kernel state with its own memory (for the cold regime)."""
    import copy

    if isinstance(st, GridState):
        c = copy.copy(st)
        for f in ("tables", "planes", "index", "scales", "scale_codes", "scale_table"):
            t = getattr(st, f)
            setattr(c, f, None if t is None else t.clone())
        buf = torch.zeros(st.codes.numel() + 16, dtype=torch.uint8)  # the kernel's tail
        buf[: st.codes.numel()] = st.codes
        c.codes = buf[: st.codes.numel()]
        c.dense = None
        c.capsule = c.linear()  # pointers into the copy's own tensors
        return c
    c = copy.copy(st)
    for f in ("scales", "zeros"):
        t = getattr(st, f)
        setattr(c, f, None if t is None else t.clone())
    buf = torch.zeros(st.qweight.numel() + 16, dtype=torch.uint8)  # the kernels' tail padding
    buf[: st.qweight.numel()] = st.qweight.reshape(-1)
    c.qweight = buf[: st.qweight.numel()].view(st.qweight.shape)
    c.weight_args = None  # the cached pointers are the original's
    if st.lut is not None:
        c.lut = copy.copy(st.lut)
        c.lut.codes = st.lut.codes.clone()
        c.lut.scales, c.lut.zeros = st.lut.scales.clone(), st.lut.zeros.clone()
        c.lut.args = None
    return c


def copies_for(nbytes: int, regime: str) -> int:
    return 1 if regime == "warm" else max(1, -(-COLD_BYTES // max(nbytes, 1)))


def bench_shape(n: int, k: int, m: int, regime: str, repeats: int, grid: str = "") -> list[dict]:
    """Rows of every method at one shape, batch size and regime; ``grid``: "" (the
    integer and float methods), "also" (and the grid formats), "only" (the integer 4-bit
    rows and the grid formats)."""
    torch.manual_seed(0)
    w = torch.randn(n, k)
    x = torch.randn(m, k)
    rows = []
    min_calls = max(3, int(2e7 // (n * k)))

    def add(method: str, bits: float, nbytes: int, reps: list[float], note: str = "") -> None:
        sec = statistics.median(reps)
        rows.append(
            {
                "shape": [n, k],
                "m": m,
                "regime": regime,
                "method": method,
                "bits": bits,
                "bytes": nbytes,
                "seconds": sec,
                "gbs": nbytes / sec / 1e9,
                "note": note,
                "rep_seconds": reps,
            }
        )

    # (method, bits, bytes, note, fn, states), all built before any is timed
    cases: list[tuple] = []
    if grid != "only":
        fw = [w.clone() for _ in range(copies_for(w.numel() * 4, regime))]
        cases.append(("float32 torch", 32, w.numel() * 4, "", lambda t: F.linear(x, t), fw))
        group = 128 if k % 128 == 0 else 64
        packed, sz = torch_int4(w, group)
        nb = packed.numel() + sz.numel() * 2
        tw = [(packed.clone(), sz.clone()) for _ in range(copies_for(nb, regime))]
        xb = x.to(torch.bfloat16)

        def int4(t):  # noqa: ANN001, ANN202
            return torch.ops.aten._weight_int4pack_mm_for_cpu(xb, t[0], group, t[1])

        cases.append(("torch int4", 4, nb, f"g{group}, bf16 activations", int4, tw))

    def run(s, _x=x):  # noqa: ANN001, ANN202
        return cpu_gemm(_x, s, None) if m <= GEMM_MAX_ROWS else F.linear(_x, cpu_dequantize(s))

    def run_grid(s, _x=x):  # noqa: ANN001, ANN202
        return grid_gemm(_x, s, None) if m <= GEMM_MAX_ROWS else F.linear(_x, grid_dequantize(s))

    def add_lmpress(name: str, pw: PackedWeight) -> None:
        st = CpuKernel().prepare(pw)
        grid_state = isinstance(st, GridState)
        fn = run_grid if grid_state else run
        # the integer GEMV path (lookup or unpack) is chosen as in a model, at the
        # first batch-1 call
        (grid_gemm if grid_state else cpu_gemm)(torch.zeros(1, k), st, None)
        nb = pw.stored_bits() // 8
        states = [st] + [clone_state(st) for _ in range(copies_for(nb, regime) - 1)]
        if m > GEMM_MAX_ROWS:
            path = "dequant+BLAS"
        elif grid_state:
            path = "table lookup"
        else:
            path = "lookup" if st.lut is not None and m == 1 else "unpack"
        cases.append((f"lmpress {name}", pw.stored_bits() / (n * k), nb, path, fn, states))

    for bits in [4] if grid == "only" else BITS:
        add_lmpress(f"w{bits}g128", lmpress_packed(w, bits, 128))
    if grid:
        add_lmpress("w4g64", lmpress_packed(w, 4, 64))
        for spec in GRID_SCHEMES:
            scheme = parse_scheme(spec)
            add_lmpress(spec, rtn(w, scheme).packed(scheme))
    reps = timed([(c[4], c[5]) for c in cases], repeats, min_calls)
    for (method, bits, nbytes, note, _fn, _states), rep in zip(cases, reps, strict=True):
        add(method, bits, nbytes, rep, note)
    return rows


def measure(a: argparse.Namespace) -> dict:
    """One process's run of every shape, batch size and regime asked for."""
    torch.set_num_threads(a.threads)
    shapes = SHAPES
    if a.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    bw = memory_bandwidth_gbs(a.repeats)
    print(f"memory copy: {bw:.1f} GB/s", flush=True)
    rows = []
    for regime in a.regimes.split(","):
        for m in [int(v) for v in a.batch.split(",")]:
            for n, k in shapes:
                for r in bench_shape(n, k, m, regime, a.repeats, a.grid):
                    rows.append(r)
                    print(
                        f"{regime:4s} M={m} {n}x{k} {r['method']:18s} {r['seconds'] * 1e6:9.1f} us "
                        f"{r['gbs']:6.1f} GB/s",
                        flush=True,
                    )
    return {
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu_name(),
        "threads": a.threads,
        "omp_proc_bind": os.environ.get("OMP_PROC_BIND", ""),
        "torch": torch.__version__,
        "kernel_build": build_info(),
        "kernel_source": source_digest(),
        "memory_copy_gbs": bw,
        "repeats": a.repeats,
        "command": "python scripts/bench_kernels.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "grid": a.grid,
        "rows": rows,
    }


def grid_vs_int4(run: dict) -> list[dict]:
    """Each grid row's time over its integer 4-bit row's (GRID_SCHEMES) at the same shape,
    batch size and regime: the median of per-repetition ratios (kernel_runs.speedup),
    and whether it is within GRID_BAR."""
    by_key = {(tuple(r["shape"]), r["m"], r["regime"], r["method"]): r for r in run["rows"]}
    out = []
    for (shape, m, regime, method), row in by_key.items():
        spec = method.removeprefix("lmpress ")
        if spec not in GRID_SCHEMES:
            continue
        base = by_key.get((shape, m, regime, f"lmpress {GRID_SCHEMES[spec]}"))
        if base is None:
            continue
        ratio = 1 / speedup(base, row)  # grid time / integer time
        out.append(
            {
                "shape": list(shape),
                "m": m,
                "regime": regime,
                "method": method,
                "versus": base["method"],
                "ratio": ratio,
                "bar": GRID_BAR,
                "within_bar": ratio <= GRID_BAR,
            }
        )
    return out


def _all_cores() -> None:
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def measure_in_processes(a: argparse.Namespace) -> dict:
    """``measure`` in ``a.processes`` fresh processes one after another, pooled
    (merge_kernel_runs): on a shared VM a process can spend its whole run in a slower
    state (every 2-thread call at a small shape twice as long, for torch's kernels and
    ours alike), which one process's repetitions cannot average out."""
    flags = ["--repeats", str(a.repeats), "--threads", str(a.threads), "--batch", a.batch]
    flags += ["--regimes", a.regimes] + (["--shapes", a.shapes] if a.shapes else [])
    flags += {"": [], "also": ["--grid"], "only": ["--grid-only"]}[a.grid]
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.processes):
            print(f"[process {i + 1}/{a.processes}]", flush=True)
            part = Path(tmp) / f"run{i}.json"
            cmd = [sys.executable, __file__, *flags, "--processes", "1", "--json", str(part)]
            # This process's OpenMP runtime bound it to one core (OMP_PROC_BIND), which a
            # child would inherit: each starts with every core of the machine again.
            subprocess.run(cmd, check=True, preexec_fn=_all_cores)
            parts.append(json.loads(part.read_text()))
    merged = merge_kernel_runs(parts)
    merged["command"] = "python scripts/bench_kernels.py " + " ".join(sys.argv[1:])
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "kernels.json"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="1", help="comma-separated activation rows, e.g. 1,4,8")
    ap.add_argument("--regimes", default="cold,warm")
    ap.add_argument("--shapes", default=None, help="e.g. 4096x4096,576x576 (out x in)")
    ap.add_argument(
        "--processes", type=int, default=3, help="separate processes to pool (1: this one)"
    )
    ap.add_argument(
        "--grid",
        dest="grid",
        action="store_const",
        const="also",
        default="",
        help="also time the grid formats " + ", ".join(GRID_SCHEMES) + " (table lookup)",
    )
    ap.add_argument(
        "--grid-only",
        dest="grid",
        action="store_const",
        const="only",
        help="time only the grid formats and the integer 4-bit rows they are compared with",
    )
    a = ap.parse_args()
    if a.processes < 1:
        ap.error("--processes must be at least 1")
    out = measure_in_processes(a) if a.processes > 1 else measure(a)
    if a.grid:
        out["grid_vs_int4"] = grid_vs_int4(out)
        for g in out["grid_vs_int4"]:
            print(
                f"{g['regime']:4s} M={g['m']} {g['shape'][0]}x{g['shape'][1]} {g['method']:18s} "
                f"{g['ratio']:.2f}x {g['versus']} ({'within' if g['within_bar'] else 'over'} "
                f"{g['bar']}x)",
                flush=True,
            )
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
