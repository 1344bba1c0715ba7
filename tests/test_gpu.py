"""The gpu profile on a real CUDA device, with the bundled student (``make test-gpu``; skipped without CUDA).

A GPU box lent for a few minutes has no hub and no API, so the student is the converted SmolLM2
folder (``COURSE_STUDENT``) and the teacher is served locally on purpose
(``COURSE_ALLOW_LOCAL_TEACHER=1``). Covers what only a GPU runs: bfloat16 loading and generation,
a smoke ``swift sft`` in bfloat16, the merge and its bfloat16 equivalence check, and ``swift deploy``
with the GPU's inference backend (vLLM where installed), two evalscope items and two GKD steps.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run on a GPU machine")]


@pytest.fixture(scope="module")
def gpu(student, tmp_path_factory):
    from helpers.core.config import get_settings

    workspace = tmp_path_factory.mktemp("gpu-ws")
    env = {"COURSE_PROFILE": "gpu", "COURSE_SIZE": "smoke", "COURSE_WORKSPACE": str(workspace),
           "COURSE_STUDENT": str(student), "COURSE_ALLOW_LOCAL_TEACHER": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield get_settings(apply_env=False)


def addition_rows(path, n: int, add: int):
    """A tiny training file in the course's reply format: "What is i + add?" for i < n."""
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {add}?"},
                          {"role": "assistant", "content": f"<think>{i} + {add} = {i + add}</think>\n<answer>"
                                                           f"\\boxed{{{i + add}}}</answer>"}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_student_generates_in_bfloat16_on_cuda(gpu, student):
    from helpers.models.generation import generate_greedy
    from helpers.models.loading import load_model, load_tokenizer

    model = load_model(student, gpu)
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    reply = generate_greedy(model, load_tokenizer(student), [[{"role": "user", "content": "What is 2 + 3?"}]],
                            max_new_tokens=8)[0]
    assert reply.ids and reply.text.strip()


def test_sft_merge_and_bfloat16_equivalence_on_cuda(gpu, student, tmp_path):
    from helpers.merge.adapter import merge_adapter
    from helpers.merge.equivalence import check_equivalence
    from helpers.train.config import default_config
    from helpers.train.runner import train

    train_file = addition_rows(tmp_path / "train.jsonl", 8, add=1)
    config = default_config(gpu, train_file=train_file, output_dir=tmp_path / "run")
    assert "--torch_dtype" in config.args() and config.args()[config.args().index("--torch_dtype") + 1] == "bfloat16"
    result = train(config, settings=gpu)
    assert result.returncode == 0 and result.last_checkpoint is not None, result.console_log.read_text()[-2000:]
    merged = merge_adapter(result.last_checkpoint, settings=gpu)
    report = check_equivalence(student, result.last_checkpoint, merged.path, ["What is 4 + 1?", "What is 7 + 1?"],
                               settings=gpu, max_new_tokens=16)
    assert report.ok and report.dtype == "bfloat16", report.table()


def test_swift_deploy_serves_on_cuda(gpu, student):
    from helpers.teacher.client import chat
    from helpers.teacher.server import LocalServer, infer_backend

    with LocalServer(student, settings=gpu) as server:
        reply = chat(server.endpoint, "What is 2 + 3?", max_tokens=8)
    assert reply.raw.strip(), f"no reply from swift deploy ({infer_backend(gpu)})"


def test_evalscope_scores_two_items_on_cuda(gpu, student, tmp_path):
    from helpers.evaluate.datasets import prepare_datasets
    from helpers.evaluate.evalscope import evaluate_model
    from helpers.evaluate.results import item_frame
    from helpers.tasks.spec import load_task

    datasets = prepare_datasets(tmp_path / "data", load_task("math"), n=2)
    result = evaluate_model(student, "base", datasets, tmp_path, max_tokens=32, batch_size=2, settings=gpu)
    items = item_frame(result.rows(datasets))
    assert len(items) == 2 and items["tokens"].gt(0).all(), items.to_string()


def test_two_gkd_steps_on_cuda(gpu, student, tmp_path):
    from helpers.techniques.gkd import gkd_config, run_gkd

    train_file = addition_rows(tmp_path / "train.jsonl", 4, add=2)
    # no hub on a lent GPU box: the teacher is a copy of the student (LoRA on the student, the copy frozen);
    # its divergence starts at 0, and what is checked is that swift rlhf runs GKD on CUDA
    import shutil

    teacher = shutil.copytree(student, tmp_path / "teacher")
    config = gkd_config(gpu, teacher_model=teacher, train_file=train_file, model=student,
                        output_dir=tmp_path / "gkd", max_steps=2, max_completion_length=16)
    result = run_gkd(config, settings=gpu)
    assert result.returncode == 0 and result.last_checkpoint is not None, result.console_log.read_text()[-2000:]
