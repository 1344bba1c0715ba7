"""Every swift command the course builds parses with swift's own argument parser: sft, export, deploy, rlhf.

The dataclass parser (transformers' HfArgumentParser over swift's argument classes) checks each
flag's name and value (a typo, a removed flag or a bad choice fails) without loading a model.
Commands are built for the bundled student, a hub student, a folder student and multi-GPU runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.core.config import get_settings
from helpers.merge.adapter import merge_args
from helpers.teacher.server import deploy_command, infer_backend
from helpers.train.config import default_config


def _parse(cls_name: str, args: list[str]) -> None:
    import swift.arguments as swift_args
    from transformers import HfArgumentParser

    parser = HfArgumentParser([getattr(swift_args, cls_name)])
    _, unknown = parser.parse_known_args(args)
    assert not unknown, f"not swift {cls_name} arguments: {unknown}"


def _settings(tmp_path: Path, profile: str, **env: str):
    return get_settings({"COURSE_PROFILE": profile, "COURSE_SIZE": "full", "COURSE_WORKSPACE": str(tmp_path),
                         **env}, apply_env=False)


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    row = {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}
    path.write_text(json.dumps(row) + "\n")
    (tmp_path / "val.jsonl").write_text(json.dumps(row) + "\n")
    return path


@pytest.fixture
def folder_student(tmp_path):
    folder = tmp_path / "my-student"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "<|im_start|>"}))
    return folder


def test_sft_commands_parse(tmp_path, train_file, folder_student):
    configs = [default_config(_settings(tmp_path, "offline"), train_file=train_file),
               default_config(_settings(tmp_path, "gpu"), train_file=train_file),
               default_config(_settings(tmp_path, "gpu", COURSE_STUDENT=str(folder_student)), train_file=train_file),
               default_config(_settings(tmp_path, "gpu"), train_file=train_file).multi_gpu(4, "zero3")]
    for config in configs:
        _parse("SftArguments", config.args())
    assert "--check_model" in configs[0].args() and "--model_type" in configs[2].args()
    with pytest.raises(AssertionError, match="--lora_rnak"):  # the check can fail
        _parse("SftArguments", [*configs[0].args(), "--lora_rnak", "8"])


def test_export_and_deploy_commands_parse(tmp_path, folder_student):
    _parse("ExportArguments", merge_args(tmp_path / "v0" / "checkpoint-6", overwrite=True))
    for settings in (_settings(tmp_path, "offline"), _settings(tmp_path, "gpu", COURSE_STUDENT=str(folder_student))):
        _parse("DeployArguments", deploy_command(folder_student, port=8000, api_key="k", served_model_name="t",
                                                 settings=settings))


def test_inference_backend(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_INFER_BACKEND", raising=False)
    assert infer_backend(_settings(tmp_path, "offline")) == "transformers"
    import importlib.util

    has_vllm = importlib.util.find_spec("vllm") is not None
    assert infer_backend(_settings(tmp_path, "gpu")) == ("vllm" if has_vllm else "transformers")
    monkeypatch.setenv("COURSE_INFER_BACKEND", "transformers")
    assert infer_backend(_settings(tmp_path, "gpu")) == "transformers"
    monkeypatch.setenv("COURSE_INFER_BACKEND", "vllm")
    with pytest.raises(ValueError, match="needs a GPU"):
        infer_backend(_settings(tmp_path, "offline"))
    if not has_vllm:
        with pytest.raises(ValueError, match="pip install vllm"):
            infer_backend(_settings(tmp_path, "gpu"))
    monkeypatch.setenv("COURSE_INFER_BACKEND", "tgi")
    with pytest.raises(ValueError, match="must be 'transformers' or 'vllm'"):
        infer_backend(_settings(tmp_path, "gpu"))
