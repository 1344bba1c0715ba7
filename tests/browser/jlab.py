"""JupyterLab in headless chromium, for the browser tests of the course's widgets.

:class:`LabServer` starts ``jupyter lab`` on 127.0.0.1 (a free port, a token, a
temporary root folder, settings and workspaces; no news pop-up, no update check).
:class:`Lab` drives it with selenium: open a notebook, Run > Run All Cells through
the menu, wait for widgets, type, click, take screenshots, measure overflow.

Nothing here needs a model: the test notebooks are small and generated per test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[2]

KERNEL_START_S = float(os.environ.get("BROWSER_KERNEL_TIMEOUT", "90"))
"""Kernel start and a run of the small notebooks (10-20 s here; generous for a busy CI box)."""
UI_S = float(os.environ.get("BROWSER_UI_TIMEOUT", "30"))
"""A widget answering a click or a key (a round trip to the kernel)."""

# Variables that make the course's widgets think nobody is there (helpers.curate.review.headless_reason).
HEADLESS_VARS = ("PYTEST_CURRENT_TEST", "CI", "COURSE_RUN_DIR", "COURSE_HEADLESS", "REVIEW")


def first_on_path(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


def _binary(variable: str, *names: str) -> str | None:
    """``$variable`` if set (it must be an executable), else the first of ``names`` on PATH."""
    if os.environ.get(variable):
        found = os.environ[variable]
        return found if os.path.isfile(found) and os.access(found, os.X_OK) else None
    return first_on_path(*names)


def chromium_binary() -> str | None:
    return _binary("CHROME_BIN", "chromium", "chromium-browser", "google-chrome")


def chromedriver_binary() -> str | None:
    return _binary("CHROMEDRIVER", "chromedriver")


def missing_reason() -> str:
    """Why the browser tests cannot run here (``""``: they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[browser]')"
    if chromium_binary() is None:
        return ("no chromium (apt-get install chromium chromium-driver, or set CHROME_BIN)"
                + (f": CHROME_BIN={os.environ['CHROME_BIN']} is not an executable" if os.environ.get("CHROME_BIN") else ""))
    if chromedriver_binary() is None:
        return ("no chromedriver (apt-get install chromium-driver, or set CHROMEDRIVER)"
                + (f": CHROMEDRIVER={os.environ['CHROMEDRIVER']} is not an executable"
                   if os.environ.get("CHROMEDRIVER") else ""))
    return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """A notebook of code cells, with the venv's python3 kernel named (no kernel-picker dialog)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path


class LabServer:
    """``jupyter lab`` headless, in a temporary root, stopped by :meth:`stop`."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.root.mkdir(parents=True)
        settings, workspaces, config, runtime, data = (base / n for n in
                                                       ("settings", "workspaces", "config", "runtime", "data"))
        # The news question ("Would you like to get notified about official Jupyter news?") is a
        # toast that can cover the widgets: answer it in the user settings, and give no news url.
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        for folder in (workspaces, config, runtime, data):
            folder.mkdir()
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in HEADLESS_VARS}
        # Temporary config, data (the notebook-signing key), runtime, settings and workspaces: nothing
        # of the user's JupyterLab is read or written; the venv's kernel and lab extensions still are.
        env.update(JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_DATA_DIR=str(data),
                   JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(workspaces),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   COURSE_SIZE=os.environ.get("COURSE_SIZE", "smoke"),
                   COURSE_PROFILE=os.environ.get("COURSE_PROFILE", "offline"))
        self.log_path = base / "jupyter.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
            cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(60)

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"jupyter lab not answering after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def shutdown_kernels(self) -> None:
        """Stop every kernel (one per opened notebook), so tests do not pile them up."""
        for session in self.api("/api/sessions") or []:
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_chromium(width: int = 1280, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", f"--window-size={width},{height}"):
        options.add_argument(arg)
    # An explicit driver: selenium must not try to download one (no internet here).
    return webdriver.Chrome(service=Service(chromedriver_binary()), options=options)


# JavaScript helpers run in the page.
OVERFLOW_JS = """
const [root, selector] = arguments;
return Array.from(root.querySelectorAll(selector)).filter(el => el.offsetParent !== null).map(el => ({
  text: (el.innerText || el.value || '').trim().slice(0, 80), cls: el.className,
  scrollWidth: el.scrollWidth, clientWidth: el.clientWidth}));
"""


class Lab:
    """A selenium driver on a :class:`LabServer`; screenshots go to ``shots``."""

    def __init__(self, server: LabServer, driver: Any, shots: Path) -> None:
        self.server, self.driver, self.shots = server, driver, shots
        shots.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- waiting
    def wait(self, condition: Callable[[Any], Any], timeout: float = UI_S, what: str = "") -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(condition)
        except TimeoutException:
            self.shot(f"timeout-{int(time.time())}")
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}\n"
                                 f"jupyter log tail:\n{self.server.log_tail(2000)}") from None

    def wait_for(self, css: str, timeout: float = UI_S, root: Any = None) -> Any:
        from selenium.webdriver.common.by import By

        def visible(_: Any) -> Any:
            found = [e for e in (root or self.driver).find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return found[0] if found else False

        return self.wait(visible, timeout, f"a visible {css!r}")

    def wait_for_file(self, path: Path, check: Callable[[str], bool], timeout: float = UI_S) -> str:
        def ready(_: Any) -> str | bool:
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
            return text if text and check(text) else False

        return self.wait(ready, timeout, f"{path} to change as expected")

    # ----------------------------------------------------------------- notebook
    def open_notebook(self, name: str) -> None:
        """Open ``name`` (in the server's root) and wait until its kernel is idle.

        Each notebook gets a workspace of its own, so the tabs of earlier tests are not
        restored (each would start its kernel again).
        """
        workspace = "t-" + re.sub(r"[^A-Za-z0-9-]", "-", name)
        self.driver.get(f"{self.server.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={self.server.token}")
        self.wait_for(".jp-NotebookPanel .jp-Cell", KERNEL_START_S)
        # the toolbar's indicator, or the status bar's "Python 3 (ipykernel) | Idle" (a narrow window
        # moves the indicator into the toolbar's overflow menu)
        self.wait(lambda d: d.execute_script(
            "const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
            "if (s && s.dataset.status === 'idle') return true;"
            "return Array.from(document.querySelectorAll('#jp-main-statusbar span'))"
            ".some(e => /\\|\\s*Idle$/.test(e.textContent.trim()));"), KERNEL_START_S, "the kernel to be idle")

    def run_all_cells(self) -> None:
        """Run > Run All Cells through the menu bar, then wait until every cell has run.

        The notebook is focused first (the menu acts on the current notebook); a click that
        started nothing (the menu closing under the pointer, say) is tried again.
        """
        from selenium.webdriver.common.by import By

        prompts_js = ("return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                      ".jp-CodeCell .jp-InputPrompt')).map(e => e.innerText.trim());")
        for attempt in range(3):
            self.wait_for(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt").click()
            menu = next(e for e in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                        if e.text.strip() == "Run")
            menu.click()
            self.wait(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-item[data-type='command']")
                                      if e.is_displayed() and e.text.strip().startswith("Run All Cells")
                                      and "lm-mod-disabled" not in (e.get_attribute("class") or "")), False),
                      what="the menu item Run All Cells").click()
            try:
                self.wait(lambda d: any(p != "[ ]:" for p in d.execute_script(prompts_js)), 10,
                          "a cell to start running")
                break
            except AssertionError:
                if attempt == 2:
                    raise
        self.wait(lambda d: (lambda p: p and all(re.fullmatch(r"\[\d+\]:", t) for t in p))(
            d.execute_script(prompts_js)), KERNEL_START_S, "every cell to have run ([n]: prompts)")
        errors = self.driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type*='error']")
        assert not errors, "a cell failed:\n" + "\n".join(e.text for e in errors)

    def output(self, index: int = -1) -> Any:
        """The output area of the ``index``-th code cell of the open notebook."""
        from selenium.webdriver.common.by import By

        cells = self.driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        return cells[index].find_element(By.CSS_SELECTOR, ".jp-Cell-outputArea")

    # ----------------------------------------------------------------- acting
    def button(self, label: str, root: Any = None) -> Any:
        """The visible widget button whose label is ``label``."""
        from selenium.webdriver.common.by import By

        def find(_: Any) -> Any:
            found = [b for b in (root or self.driver).find_elements(By.CSS_SELECTOR, "button.widget-button")
                     if b.is_displayed() and (b.get_attribute("textContent") or "").strip() == label]
            return found[0] if found else False

        return self.wait(find, UI_S, f"a button {label!r}")

    def click(self, label: str, root: Any = None) -> None:
        self.button(label, root).click()

    def type_into(self, element: Any, text: str) -> None:
        element.click()
        element.clear()
        element.send_keys(text)

    @contextlib.contextmanager
    def window_width(self, width: int) -> Iterator[None]:
        """Narrow the browser window for a block (a laptop with the file browser open), then restore it."""
        size = self.driver.get_window_size()
        self.driver.set_window_size(width, size["height"])
        try:
            time.sleep(0.5)  # JupyterLab lays the panels out again on resize
            yield
        finally:
            self.driver.set_window_size(size["width"], size["height"])

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    # ----------------------------------------------------------------- measuring
    def overflowing(self, root: Any, selector: str, slack: int = 0) -> list[dict[str, Any]]:
        """Visible elements under ``root`` matching ``selector`` whose content is wider than their box."""
        return [m for m in self.driver.execute_script(OVERFLOW_JS, root, selector)
                if m["scrollWidth"] > m["clientWidth"] + slack]

    def scroll_overflow(self, element: Any) -> int:
        """How many pixels ``element`` would scroll sideways (0: no horizontal scrollbar)."""
        return self.driver.execute_script("return arguments[0].scrollWidth - arguments[0].clientWidth;", element)
