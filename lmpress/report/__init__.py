"""Reports: tables rendered from benchmark results."""
