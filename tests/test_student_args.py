"""swift's --model_type/--template for any student: by name, from a merged folder's args.json, by architecture."""
import json

import pytest

from helpers.core.config import get_settings
from helpers.models.student import StudentUnavailable, student_dir, student_source, swift_model_args


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_WORKSPACE", str(tmp_path / "ws"))
    for name in ("COURSE_STUDENT", "COURSE_STUDENT_MODEL_TYPE", "COURSE_STUDENT_TEMPLATE"):
        monkeypatch.delenv(name, raising=False)
    return get_settings


def _folder(path, architectures, model_type, chat_template=None):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": architectures, "model_type": model_type}))
    if chat_template is not None:
        (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": chat_template}))
    return path


def test_hub_id_by_name(settings):
    assert swift_model_args("Qwen/Qwen2.5-1.5B-Instruct", settings()) == (
        "--model_type", "qwen2", "--template", "qwen2_5")


def test_llama_folder_with_chatml_template(settings, tmp_path):
    folder = _folder(tmp_path / "my-student", ["LlamaForCausalLM"], "llama", "<|im_start|>{{ m }}<|im_end|>")
    assert swift_model_args(folder, settings()) == ("--model_type", "llama", "--template", "chatml")


def test_merged_folder_keeps_its_training_args(settings, tmp_path):
    folder = _folder(tmp_path / "merged", ["Qwen2ForCausalLM"], "qwen2")
    (folder / "args.json").write_text(json.dumps({"model_type": "qwen2", "template": "qwen2_5"}))
    assert swift_model_args(folder, settings()) == ("--model_type", "qwen2", "--template", "qwen2_5")


def test_unknown_folder_names_the_fix(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "gpu")  # offline, every model is the bundled SmolLM2 (llama, chatml)
    folder = _folder(tmp_path / "anon", ["Qwen2ForCausalLM"], "qwen2")  # no name, no chat template: ambiguous
    with pytest.raises(StudentUnavailable, match="COURSE_STUDENT_MODEL_TYPE"):
        swift_model_args(folder, settings())


def test_offline_student_is_the_bundled_gguf(settings):
    s = settings()
    assert student_source(s) == "bundled-gguf" and student_dir(s).parent == s.models_dir


def test_overrides_for_the_student(settings, tmp_path, monkeypatch):
    folder = _folder(tmp_path / "anon2", ["Qwen2ForCausalLM"], "qwen2")
    monkeypatch.setenv("COURSE_STUDENT", str(folder))
    monkeypatch.setenv("COURSE_STUDENT_MODEL_TYPE", "qwen2")
    monkeypatch.setenv("COURSE_STUDENT_TEMPLATE", "qwen2_5")
    s = settings()
    assert student_source(s) == "folder" and student_dir(s) == folder.resolve()
    assert swift_model_args(folder, s) == ("--model_type", "qwen2", "--template", "qwen2_5")
