"""The sweep's HTML report in a real headless browser (issue 4: "opens without errors").

Needs Debian's chromium and chromedriver (``scripts/install_browser.sh``, which
``make test`` runs) and selenium (dev extra); skips, saying so, without them.
"""

import os
import shutil

import pytest
from headless_browser import browser_available, headless_chromium, open_and_screenshot
from test_cli import run


@pytest.fixture
def browser():
    missing = browser_available()
    if missing:
        pytest.skip(missing)
    with headless_chromium() as driver:
        yield driver


def test_sweep_report_opens_in_headless_browser(capsys, tmp_path, tiny_llama_dir, browser):
    import matplotlib.image as mpimg

    text = tmp_path / "t.txt"
    text.write_text("\n".join(f"Row {i}: words of text for the sweep." for i in range(200)))
    code, _, err = run(
        capsys, "sweep", tiny_llama_dir, "-o", tmp_path / "s", "--schemes", "w4g32,w3g32,w2g32",
        "--methods", "rtn,hqq:fit_scale=true", "--calib", text, "--calib-samples", "4",
        "--calib-seq-len", "32", "--ppl", text, "--ctx", "64", "--windows", "1", "--no-speed",
        "--quiet",
    )  # fmt: skip
    assert code == 0, err
    rows = (tmp_path / "s" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 7  # 6 cells and the float reference
    png = tmp_path / "report.png"
    state = open_and_screenshot(browser, tmp_path / "s" / "report.html", png)
    assert state["ready"] == "complete" and state["title"].startswith("lmpress sweep")
    assert state["console"] == [], state["console"]
    assert state["rows"] == 8  # header, float, 6 cells
    assert len(state["images"]) >= 4
    broken = [alt for complete, width, alt in state["images"] if not complete or width == 0]
    assert not broken, f"images that did not decode: {broken}"
    shot = mpimg.imread(png)  # a rendered page, not a blank one
    assert shot.shape[0] > 900 and shot.shape[1] >= 1000
    assert shot[..., :3].std() > 0.05
    if os.environ.get("LMPRESS_KEEP_SCREENSHOT"):  # to look at it: the point of the test
        shutil.copy(png, os.environ["LMPRESS_KEEP_SCREENSHOT"])
