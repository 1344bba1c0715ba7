"""Shared test setup: the offline profile, the smoke size, and one prepared student.

The prepared student folder lives in the normal workspace so notebooks and tests
share the one-time GGUF conversion; tests that must convert for real use a
temporary workspace instead.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "offline")
os.environ.setdefault("COURSE_SIZE", "smoke")


@pytest.fixture(scope="session")
def settings():
    from helpers.core.config import get_settings

    s = get_settings()
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def student(settings):
    """The prepared student folder (converted once per workspace)."""
    from helpers.models.student import prepare_student

    return prepare_student(settings).path


@pytest.fixture(autouse=True)
def _slow_marker_is_honest(request, monkeypatch):
    """A test that loads model weights or serves a model must carry ``@pytest.mark.slow``.

    ``make test-fast`` (``-m "not slow"``) promises to load no model; this makes a
    forgotten marker fail the test instead of quietly slowing the fast tier down.
    """
    if request.node.get_closest_marker("slow"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} loads or serves a model: mark it @pytest.mark.slow")

    from transformers import modeling_utils

    from helpers.teacher import server

    monkeypatch.setattr(modeling_utils.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(server.LocalServer, "start", refuse)
