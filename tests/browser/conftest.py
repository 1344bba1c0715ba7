"""Browser tests: the course's ipywidgets in JupyterLab, driven by headless chromium (``make test-browser``).

Every test here carries the ``browser`` marker and is skipped, with the reason, when
selenium, chromium or chromedriver is missing, so ``make test`` passes without them.
One JupyterLab server and one browser serve the whole session; each test writes a
small notebook (the real helper classes on tiny inputs, no model) and opens it.
Screenshots go to ``$BROWSER_SHOTS`` (default ``workspace/browser-shots``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from jlab import REPO, Lab, LabServer, missing_reason, start_chromium

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    for item in mine:
        item.add_marker(pytest.mark.browser)
    reason = missing_reason() if mine else ""
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=f"browser test: {reason}"))


@pytest.fixture(scope="session")
def shots_dir() -> Path:
    return Path(os.environ.get("BROWSER_SHOTS") or REPO / "workspace" / "browser-shots")


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = LabServer(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(lab_server: LabServer) -> Iterator[object]:
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def lab(lab_server: LabServer, browser: object, shots_dir: Path) -> Iterator[Lab]:
    """The session's browser on the session's JupyterLab; the test's kernels are stopped after it."""
    yield Lab(lab_server, browser, shots_dir)
    lab_server.shutdown_kernels()
