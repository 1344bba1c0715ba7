"""The environment report of notebook 00: every check says what is wrong and what to type next."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402

from helpers.core.config import get_settings  # noqa: E402
from helpers.course import envcheck  # noqa: E402
from helpers.course.envcheck import (  # noqa: E402
    check_hardware,
    check_packages,
    check_profile,
    check_student,
    check_teacher,
    report_frame,
    run_checks,
)


def _settings(tmp_path: Path, **env: str):
    return get_settings({"COURSE_WORKSPACE": str(tmp_path), **env}, apply_env=False)


def test_packages_found_and_missing() -> None:
    checks = check_packages({"pandas": "tables", "no-such-package-xyz": "nothing"})
    assert [c.status for c in checks] == ["ok", "fail"]
    assert checks[0].detail.split()[0][0].isdigit()  # the installed version
    assert "make setup" in checks[1].fix and not checks[1].ok


def test_hardware_and_the_gpu_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    offline = {c.item: c for c in check_hardware(_settings(tmp_path))}
    assert offline["gpu"].status == "ok" and "not needed" in offline["gpu"].detail
    assert offline["disk (workspace)"].detail.endswith("GiB free")
    gpu = {c.item: c for c in check_hardware(_settings(tmp_path, COURSE_PROFILE="gpu"))}
    assert gpu["gpu"].status == "fail" and "COURSE_PROFILE=offline" in gpu["gpu"].fix


def test_profile_reports_missing_hub_switches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, "1")
    assert all(c.ok for c in check_profile(settings))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    switch = check_profile(settings)[-1]
    assert switch.status == "fail" and "HF_HUB_OFFLINE" in switch.detail and "get_settings" in switch.fix


def test_teacher_checks(tmp_path: Path) -> None:
    (local,) = check_teacher(_settings(tmp_path))
    assert local.ok and "local" in local.detail
    (selfish,) = check_teacher(_settings(tmp_path, COURSE_PROFILE="gpu"))
    assert selfish.status == "fail" and "TEACHER_BASE_URL" in selfish.fix  # never a silent self-teaching student
    from helpers.teacher.server import teacher_endpoint

    with pytest.raises(RuntimeError, match="student would teach itself"):  # and the notebooks stop before serving
        teacher_endpoint(_settings(tmp_path, COURSE_PROFILE="gpu"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_ALLOW_LOCAL_TEACHER", "1")
        (chosen,) = check_teacher(_settings(tmp_path, COURSE_PROFILE="gpu"))
        assert chosen.ok and "local" in chosen.detail
    with FakeOpenAI(api_key="right-key-123456") as fake:
        api = {"TEACHER_BASE_URL": fake.base_url, "TEACHER_MODEL": fake.model}
        (ok,) = check_teacher(_settings(tmp_path, **api, TEACHER_API_KEY="right-key-123456"))
        assert ok.status == "ok" and fake.model in ok.detail
        (wrong,) = check_teacher(_settings(tmp_path, **api, TEACHER_API_KEY="wrong-key-654321"))
        assert wrong.status == "fail" and "rejected the API key" in wrong.detail
        assert "wrong-key-654321" not in wrong.detail + wrong.fix
        (other,) = check_teacher(_settings(tmp_path, **{**api, "TEACHER_MODEL": "absent"},
                                           TEACHER_API_KEY="right-key-123456"))
        assert other.status == "warn" and fake.model in other.fix
    (gone,) = check_teacher(_settings(tmp_path, TEACHER_BASE_URL="http://127.0.0.1:9", TEACHER_MODEL="m"),
                            timeout=2)
    assert gone.status == "fail" and "unreachable" in gone.detail


def test_student_not_prepared_and_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path)
    (student,) = check_student(settings)
    assert student.status == "warn" and "prepare_student" in student.fix
    monkeypatch.setattr(envcheck, "check_packages", lambda: [])
    frame = report_frame(run_checks(settings))
    assert list(frame.columns) == ["", "area", "item", "detail", "what to do"]
    assert set(frame[""]) <= {"OK", "WARN", "FAIL"} and "student" in set(frame["area"])
