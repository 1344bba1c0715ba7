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
