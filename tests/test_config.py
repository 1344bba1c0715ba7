"""Profile selection, workspace paths, teacher endpoint and secret masking."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from helpers.core.config import PROFILES, Secret, TeacherEndpoint, get_settings, mask_secrets, teacher_from_env

KEY = "sk-test-0123456789abcdefXYZ"


def test_offline_is_the_default_profile(tmp_path):
    s = get_settings({"COURSE_WORKSPACE": str(tmp_path)}, apply_env=False)
    assert s.profile.name == "offline"
    assert s.profile.device == "cpu" and s.profile.hub_offline
    assert s.size == "full"


def test_gpu_profile_selected_by_env(tmp_path):
    s = get_settings({"COURSE_PROFILE": "GPU", "COURSE_WORKSPACE": str(tmp_path)}, apply_env=False)
    assert s.profile is PROFILES["gpu"]
    assert s.profile.student_model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert not s.profile.hub_offline


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="offline.*gpu|gpu.*offline"):
        get_settings({"COURSE_PROFILE": "tpu"}, apply_env=False)


def test_bad_size_is_a_clear_error():
    with pytest.raises(ValueError, match="smoke"):
        get_settings({"COURSE_SIZE": "huge"}, apply_env=False)


def test_every_path_is_under_the_workspace(tmp_path):
    s = get_settings({"COURSE_WORKSPACE": str(tmp_path / "ws")}, apply_env=False)
    for path in (s.models_dir, s.datasets_dir, s.runs_dir, s.outputs_dir, s.cache_dir, s.logs_dir):
        assert Path(path).is_relative_to(tmp_path / "ws")
    s.ensure_dirs()
    assert (tmp_path / "ws" / "models").is_dir()


def test_offline_profile_exports_hub_offline_vars(monkeypatch, tmp_path):
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COURSE_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("COURSE_PROFILE", "offline")
    import os

    get_settings()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_offline_training_flags():
    offline, gpu = PROFILES["offline"], PROFILES["gpu"]
    assert offline.swift_train_hub_args == ("--check_model", "false")
    assert "--fp16" in offline.swift_precision_args and "float32" in offline.swift_precision_args
    assert gpu.swift_train_hub_args == ()


def test_teacher_from_env():
    assert teacher_from_env({}) is None
    t = teacher_from_env({"TEACHER_BASE_URL": "https://api.example.com/v1/", "TEACHER_API_KEY": KEY,
                          "TEACHER_MODEL": "deepseek-r1"})
    assert t.base_url == "https://api.example.com/v1" and t.model == "deepseek-r1"
    assert t.client_kwargs()["api_key"] == KEY
    with pytest.raises(ValueError, match="TEACHER_MODEL"):
        teacher_from_env({"TEACHER_BASE_URL": "https://api.example.com/v1"})
    with pytest.raises(ValueError, match="http"):
        TeacherEndpoint(base_url="api.example.com", model="m")


def test_api_key_never_shows(caplog, capsys, tmp_path):
    env = {"TEACHER_BASE_URL": "https://api.example.com/v1", "TEACHER_API_KEY": KEY, "TEACHER_MODEL": "m",
           "COURSE_WORKSPACE": str(tmp_path)}
    s = get_settings(env, apply_env=False)
    shown = [repr(s), str(s), repr(s.teacher), f"{s.teacher.api_key}", str(s.summary()), repr(s.teacher.api_key)]
    print(*shown)
    logging.getLogger("course").warning("settings: %s %r", s.teacher, s.teacher.api_key)
    out = capsys.readouterr().out + caplog.text
    assert KEY not in out and KEY[-8:] not in out
    assert "****" in out


def test_mask_secrets_scrubs_logs():
    secret = Secret("local-abcdefghijklmnop")
    text = f"cmd --api_key {secret.reveal()} Authorization: Bearer {secret.reveal()} and sk-ABCDEFGHIJKLMNOPQR"
    masked = mask_secrets(text)
    assert secret.reveal() not in masked and "sk-ABCDEFGHIJKLMNOPQR" not in masked
    assert masked.count("****") >= 3


def test_dotenv_is_honoured_and_env_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"TEACHER_BASE_URL=https://dotenv.example/v1\nTEACHER_MODEL=from-dotenv\nTEACHER_API_KEY={KEY}\n")
    monkeypatch.chdir(tmp_path)
    for key in ("TEACHER_BASE_URL", "TEACHER_MODEL", "TEACHER_API_KEY"):
        # set-then-delete makes monkeypatch restore the original state, so the values
        # load_dotenv writes into os.environ do not leak into later tests
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    monkeypatch.setenv("TEACHER_MODEL", "from-env")
    monkeypatch.setenv("COURSE_WORKSPACE", str(tmp_path))
    s = get_settings()
    assert s.teacher.base_url == "https://dotenv.example/v1"
    assert s.teacher.model == "from-env"
