"""Which machine measured a result: a CPU label precise enough to tell hosts apart.

A sweep records it with every row (its timings compare only between rows of one
machine); the project's benchmark scripts record it too.
"""

import platform
from pathlib import Path


def cpu_name() -> str:
    """This machine's :func:`cpu_label` (``platform.processor()`` where /proc/cpuinfo is
    missing or names no model)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return cpu_label(text) or platform.processor() or "unknown CPU"


def cpu_label(cpuinfo: str) -> str:
    """The first CPU of a /proc/cpuinfo text as model name, widest vector extension and
    (x86) family and model, e.g. ``AMD EPYC (AVX-512, family 25 model 17)``; "" when the
    text names no model.

    The model name alone is not enough: cloud hosts sold under one name differ in
    generation and in vector extensions, and both change what a kernel's timing means.
    """
    name, flags, fam, model = "", set(), "", ""
    for line in cpuinfo.splitlines():
        key, _, val = (part.strip() for part in line.partition(":"))
        if key == "model name" and not name:
            name = val
        elif key == "flags" and not flags:
            flags = set(val.split())
        elif key == "cpu family" and not fam:
            fam = val
        elif key == "model" and not model:
            model = val
    if not name:
        return ""
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    parts = [isa] if isa else []
    if fam and model:
        parts.append(f"family {fam} model {model}")
    return f"{name} ({', '.join(parts)})" if parts else name
