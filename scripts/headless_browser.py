"""Open a sweep's HTML report in headless Chromium and screenshot it.

For the tests and ``scripts/bench_eval.py``, which check that the page a sweep
writes opens without errors; not part of the installed package.

Needs Debian's ``chromium`` and ``chromedriver`` (``scripts/install_browser.sh``)
and ``selenium`` (dev extra). :func:`browser_available` says whether they are here.
"""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Without the background-networking flags Chromium keeps dialling out, and a
# closed network refuses every connection.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
)


def browser_available() -> str | None:
    """``None`` when a headless browser can run here, else what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "no chromium: run scripts/install_browser.sh (Debian packages)"
    if not shutil.which("chromedriver"):
        return "no chromedriver: run scripts/install_browser.sh (Debian packages)"
    return None


@contextmanager
def headless_chromium() -> Iterator[object]:
    """A selenium Chrome driver on the local Chromium, with a throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="lmpress-chromium-") as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            yield driver
        finally:
            driver.quit()


def open_and_screenshot(driver, page: Path, png: Path) -> dict:
    """Load ``page``, save a full-page screenshot to ``png``; returns what the page reported:
    ``ready``, ``title``, ``rows`` (table rows), ``images`` ([complete, natural width, alt]),
    ``console`` (SEVERE console entries: script errors, failed loads)."""
    driver.get(Path(page).resolve().as_uri())
    state = driver.execute_script(
        "return {ready: document.readyState, title: document.title,"
        " height: document.body.scrollHeight, rows: document.querySelectorAll('tr').length,"
        " images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])}"
    )
    driver.set_window_size(1200, min(state["height"] + 100, 16000))
    if not driver.save_screenshot(str(png)):
        raise RuntimeError(f"the browser could not write {png}")
    state["console"] = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return state
