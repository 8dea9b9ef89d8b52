"""The demo page (examples/space/app.py, issue 35) in a real browser: headless Chromium, driven by Selenium.

The app runs as a user starts it, `python examples/space/app.py --model DIR --server_port PORT`, in a new interpreter,
offline, on the suite's `trained` model saved with the paper's decoding (beam 4, alpha 0.6). The browser types a
real Multi30k sentence, clicks Translate, and reads the best translation and the n-best table; both must equal what
the model's own pipeline returns for that sentence (`num_return_sequences`, `return_scores=True`): texts exactly,
scores to the 4 decimals the page shows. A second click with 2 translations asked for lists exactly the first 2.

Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver; .ci/run installs them)
and the `[dev]` extra's gradio and selenium. Without them the test fails in CI (`CI` set) and is skipped elsewhere,
naming what to install. A screenshot of the page is saved in the test's folder, and also to
`$VASWANI_DEMO_SCREENSHOT` when set (docs/demo.png was made so); `$VASWANI_DEMO_MODEL` runs the test on another
saved model instead (a real trained one, for that screenshot).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, save_trained_translation_model


pytestmark = pytest.mark.slow  # a server and a browser: CI runs it, the quick loop (-m "not slow") does not

APP = REPO_ROOT / "examples" / "space" / "app.py"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The flags of a headless Chromium on a machine without network access: no sandbox (root in CI), no GPU, and none
# of the background connections (updates, sync, QUIC) that a closed network refuses.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1200,1000",
)  # fmt: skip
WAIT_SECONDS = 120
# What the page shows, read in one go inside the browser (Gradio re-renders while it updates, so elements found one
# by one can go stale): [the translation box's text, the n-best table's rows as lists of cell texts]. The table is
# read through its ARIA grid: body rows hold grid cells, the header row column headers.
PAGE_SCRIPT = """
const best = document.querySelector('#best textarea, #best input');
const rows = [...document.querySelectorAll('#nbest [role=row]')]
  .map(row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))
  .filter(cells => cells.length > 0);
return [best ? best.value : '', rows];
"""  # a busy 2-core machine: model loading and the first request can take a while


def require(condition: bool, message: str) -> None:
    """Fail in CI (`CI` set: the browser test must run there), skip elsewhere, with `message`."""
    if not condition:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory) -> Path:
    if os.environ.get("VASWANI_DEMO_MODEL"):
        return Path(os.environ["VASWANI_DEMO_MODEL"])
    return save_trained_translation_model(tmp_path_factory.mktemp("demo") / "multi30k-en-de-tiny", trained)


@pytest.fixture(scope="module")
def app_url(model_dir, tmp_path_factory):
    """The app served on a free localhost port by a new interpreter (offline, one thread); stopped afterwards."""
    require(importlib.util.find_spec("gradio") is not None, 'gradio is not installed: pip install -e ".[dev]"')
    port, home = free_port(), tmp_path_factory.mktemp("app_home")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_TOKEN")}
    env.update(HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    env.update(TOKENIZERS_PARALLELISM="false")
    log = (home / "app.log").open("w")
    command = [sys.executable, str(APP), "--model", str(model_dir), "--server_port", str(port)]
    app = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            if app.poll() is not None:
                pytest.fail(f"app.py exited with status {app.returncode}:\n{(home / 'app.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url} in {WAIT_SECONDS} s:\n{(home / 'app.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium through its ChromeDriver (no driver or browser download: both paths are given)."""
    require(importlib.util.find_spec("selenium") is not None, 'selenium is not installed: pip install -e ".[dev]"')
    require(
        CHROMIUM.is_file() and CHROMEDRIVER.is_file(),
        f"{CHROMIUM} or {CHROMEDRIVER} not found: install Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def read_page(driver, count: int) -> tuple[str, list[list[str]]]:
    """Wait until the page shows a translation and `count` filled n-best rows; return (translation, rows of cells)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def page(driver) -> tuple[str, list[list[str]]]:
        return driver.execute_script(PAGE_SCRIPT)

    def shown(driver):
        best, rows = page(driver)
        filled = len(rows) == count and all(len(cells) == 3 and all(cells) for cells in rows)
        return (best, rows) if best and filled else False

    try:
        return WebDriverWait(driver, WAIT_SECONDS).until(shown)
    except TimeoutException:
        pytest.fail(f"after {WAIT_SECONDS} s the page shows {page(driver)}, not a translation and {count} rows")


def test_demo_page_shows_the_pipelines_n_best_translations_with_scores(
    browser, app_url, model_dir, real_sentences, tmp_path
):  # the browser first: a missing Chromium is reported before a model is trained and served
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    from transformers import pipeline

    sentence = real_sentences["en"][0]
    translator = pipeline("translation", model=str(model_dir), trust_remote_code=True)
    beams = translator.model.generation_config.num_beams
    browser.get(app_url)
    source = WebDriverWait(browser, WAIT_SECONDS).until(lambda d: d.find_element(By.CSS_SELECTOR, "#source textarea"))
    source.send_keys(sentence)
    browser.find_element(By.ID, "translate").click()
    best, rows = read_page(browser, beams)  # the page lists the whole beam by default

    expected = translator(sentence, num_return_sequences=beams, return_scores=True)
    assert best == expected[0]["translation_text"] != ""
    assert [(int(rank), text) for rank, text, _ in rows] == [
        (rank, record["translation_text"]) for rank, record in enumerate(expected, 1)
    ]
    assert [float(score) for _, _, score in rows] == [round(record["score"], 4) for record in expected]
    assert [float(score) for _, _, score in rows] == sorted((float(score) for _, _, score in rows), reverse=True)
    browser.save_screenshot(str(tmp_path / "demo.png"))
    if os.environ.get("VASWANI_DEMO_SCREENSHOT"):
        shutil.copyfile(tmp_path / "demo.png", os.environ["VASWANI_DEMO_SCREENSHOT"])
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Fewer translations asked for: the first 2 of the same beam.
    count = browser.find_element(By.CSS_SELECTOR, "#count input[type=number]")
    count.send_keys(Keys.CONTROL, "a")
    count.send_keys("2", Keys.TAB)
    browser.find_element(By.ID, "translate").click()
    _, rows = read_page(browser, 2)
    assert [text for _, text, _ in rows] == [record["translation_text"] for record in expected[:2]]
