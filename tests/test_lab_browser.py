"""The learner's lab in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver` packages)
driven by selenium. The lab is started with the command `course.py lab` uses, on a copy of the course."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
LESSON = "notebooks/01_neural_networks_are_numbers.ipynb"
EXERCISE = "workspace/01_neural_networks_are_numbers.ipynb"
TOKEN = "llmcourse-browser-test"
ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook tab in front

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="no browser: install Debian's `chromium` and `chromium-driver` packages (apt install chromium "
           "chromium-driver) to run the lab in a real browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{path}?token={TOKEN}", timeout=10) as r:
        return r.status, json.loads(r.read())


@pytest.fixture
def lab(tmp_path):
    """A copy of the course (lessons, exercises, solutions) served by `course.py lab`'s command line."""
    root = tmp_path / "course"
    for folder in ("notebooks", "exercises", "solutions"):
        shutil.copytree(ROOT / folder, root / folder)
    sys.path.insert(0, str(ROOT))
    import course
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "run"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), LLMCOURSE_ROOT=str(root), LLMCOURSE_FAST="1")
    command = course.lab_command([f"--port={port}", "--no-browser", f"--IdentityProvider.token={TOKEN}",
                                  f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}"], root=root)
    command[0] = str(Path(sys.executable).with_name("jupyter"))
    server = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _api(port, "status")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError("the lab did not start within 60 s")
                time.sleep(0.5)
        yield root, port, env
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _run_all(driver, port: int) -> None:
    """Run > Run All Cells, then wait until every code cell has run and the kernel is idle."""
    from selenium.webdriver.common.by import By
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, f"{ACTIVE} .jp-Cell"), 60, "the notebook to open")
    _wait(lambda: any(s["kernel"]["execution_state"] == "idle" for s in _api(port, "sessions")[1]), 60,
          "the kernel to start")
    menu = _wait(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel")
                          if e.text == "Run"], 30, "the Run menu")
    menu[0].click()
    item = _wait(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
                          if e.text == "Run All Cells"], 10, "Run All Cells")
    item[0].click()

    def finished():
        prompts = [p.get_attribute("textContent")
                   for p in driver.find_elements(By.CSS_SELECTOR, f"{ACTIVE} .jp-CodeCell .jp-InputPrompt")]
        busy = any("*" in p for p in prompts) or any(
            s["kernel"]["execution_state"] != "idle" for s in _api(port, "sessions")[1])
        return prompts and not busy and all(p.strip() not in ("", "[ ]:") for p in prompts)
    time.sleep(2)
    _wait(finished, 240, "every cell to run", interval=1)


def _errors(driver) -> list[str]:
    from selenium.webdriver.common.by import By
    return [e.get_attribute("textContent")[:300] for e in driver.find_elements(
        By.CSS_SELECTOR, f'{ACTIVE} [data-mime-type="application/vnd.jupyter.error"]')]


def test_a_learner_runs_a_lesson_moves_a_slider_and_checks_an_exercise(lab, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    root, port, env = lab
    for folder in ("notebooks", "exercises"):
        assert _api(port, f"contents/{folder}")[0] == 200, folder
    try:
        browser.get(f"http://127.0.0.1:{port}/lab/tree/{LESSON}?token={TOKEN}")
        _run_all(browser, port)
        assert _errors(browser) == []
        # the neuron explorer is a live widget: sliders in the page, and moving one redraws its picture
        first_explorer = "(//div[contains(@class, 'widget-interact')][.//div[contains(@class, 'widget-slider')]])[1]"

        def picture():
            try:  # the output is redrawn while we look: a vanished element counts as "not there yet"
                images = browser.find_elements(
                    By.XPATH, first_explorer + "//div[contains(@class, 'widget-output')]//img")
                return images[0].get_attribute("src") if images else None
            except StaleElementReferenceException:
                return None

        def move_slider():
            try:
                handle = browser.find_element(By.XPATH, first_explorer + "//div[contains(@class, 'noUi-handle')]")
                browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
                handle.click()
                for _ in range(10):
                    handle.send_keys(Keys.ARROW_RIGHT)
                return True
            except StaleElementReferenceException:
                return False
        before = _wait(picture, 30, "the explorer's picture")
        _wait(move_slider, 30, "a slider to move")
        _wait(lambda: picture() not in (None, before), 30, "the picture to change after moving the slider")

        # an exercise in the same lab
        started = subprocess.run([sys.executable, "-m", "llmcourse.cli", "start", "01"], cwd=root, env=env,
                                 capture_output=True, text=True, check=True)
        assert EXERCISE in started.stdout
        assert _api(port, "contents/workspace")[0] == 200
        browser.get(f"http://127.0.0.1:{port}/lab/tree/{EXERCISE}?token={TOKEN}")
        _run_all(browser, port)
        assert _errors(browser) == [], "an untouched exercise runs without errors"
        outputs = " ".join(e.get_attribute("textContent")
                           for e in browser.find_elements(By.CSS_SELECTOR, f"{ACTIVE} .jp-OutputArea-output"))
        assert "[FAIL]" in outputs and "not written yet" in outputs and "hint:" in outputs
    finally:
        shot = tmp_path / "lab.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the lab: {shot}")
