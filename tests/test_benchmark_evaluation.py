"""The evaluation section of the benchmark page marks each bar pass or FAIL."""

from benchmark_evaluation import render_evaluation


def test_evaluation_section_marks_bars():
    def task(diff):
        acc = {"lmpress": 0.5, "lm_eval": 0.5, "differing_examples": diff}
        return {"n": 500, "acc": acc, "acc_norm": dict(acc), "lmpress_s": 1, "lm_eval_s": 2}

    lm = {"command": "c", "model": "m", "limit": 500, "lm_eval_version": "0.4", "batch_size": 16}
    names = ("hellaswag", "piqa", "arc_easy", "winogrande")
    good = render_evaluation({**lm, "tasks": {n: task(0) for n in names}}, None)
    assert "WinoGrande with `--limit 500`: **pass**" in good
    bad = render_evaluation({**lm, "tasks": {**{n: task(0) for n in names}, "piqa": task(1)}}, None)
    assert "**FAIL**" in bad
    partial = render_evaluation({**lm, "tasks": {"piqa": task(0)}}, None)
    assert "**FAIL** (measured so far: piqa)" in partial
    cache = {"command": "c", "schemes": ["w8"], "ctx": 2048, "windows": 4}
    ok = render_evaluation(None, {"cache": {**cache, "first_with_base_s": 20.0,
        "cached_median_s": 10.5, "plain_s": 10.0, "eight_total_s": 94.0}})  # fmt: skip
    assert "(1.05x): **pass**" in ok
    broken = render_evaluation(None, {"cache": {**cache, "first_with_base_s": 20.0,
        "cached_median_s": 20.0, "plain_s": 10.0, "eight_total_s": 160.0}})  # fmt: skip
    assert "(2.00x): **FAIL**" in broken
    assert render_evaluation(None, None) == ""
