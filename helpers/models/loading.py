"""Load a model folder (optionally with a LoRA adapter) on the profile's device, in the right precision.

Training and the merge check use the profile's dtype (like with like). Generating
is memory-bound on a CPU, so inference uses bfloat16 with eager attention where
the CPU computes bfloat16 natively (:func:`serving_precision`); the local teacher
server and in-process evaluations share that choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.config import Settings, get_settings

SERVE_DTYPE_ENV = "COURSE_SERVE_DTYPE"
SERVE_DTYPES = ("float32", "bfloat16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16, read from Linux's cpuinfo).

    Without it PyTorch emulates bfloat16 on the CPU, which is slower than float32,
    so the answer is ``False`` wherever it cannot be read (macOS, Windows).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def serving_precision(settings: Settings, *, cpuinfo: str | None = None,
                      env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """``(torch dtype, attention implementation or None)`` for *inference* with the course's models.

    bfloat16 + eager attention on a CPU with native bfloat16 (PyTorch's CPU SDPA kernel
    with a padding mask is slow in bfloat16; see bench/README.md), the profile's dtype
    elsewhere and on a GPU. ``COURSE_SERVE_DTYPE`` (``float32`` or ``bfloat16``) overrides it.
    """
    env = os.environ if env is None else env
    profile = settings.profile
    wanted = (env.get(SERVE_DTYPE_ENV) or "").strip()
    if wanted and wanted not in SERVE_DTYPES:
        raise ValueError(f"{SERVE_DTYPE_ENV}={wanted!r} must be one of {', '.join(SERVE_DTYPES)}.")
    if profile.device != "cpu":
        return wanted or profile.torch_dtype, None
    dtype = wanted or ("bfloat16" if cpu_has_native_bf16(cpuinfo) else profile.torch_dtype)
    return dtype, ("eager" if dtype == "bfloat16" else None)


def load_model(path: str | Path, settings: Settings | None = None, *, for_inference: bool = False,
               dtype: str | None = None) -> Any:
    """A causal LM on the profile's device, in eval mode.

    In the profile's dtype by default (what training used: the merge check compares
    like with like; ``dtype`` forces another). ``for_inference=True`` loads it the way the local server runs
    models (:func:`serving_precision`: bfloat16 on CPUs that compute it
    natively), for evaluations and chats where only speed changes.
    """
    import torch
    from transformers import AutoModelForCausalLM

    settings = settings or get_settings()
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype or settings.profile.torch_dtype)}
    if for_inference and dtype is None:
        dtype, attention = serving_precision(settings)
        kwargs["dtype"] = getattr(torch, dtype)
        if attention:
            kwargs["attn_implementation"] = attention
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.to(settings.profile.device).eval()


def load_with_adapter(base: str | Path, checkpoint: str | Path, settings: Settings | None = None, *,
                      for_inference: bool = False, dtype: str | None = None) -> Any:
    """The base model with the LoRA adapter applied by peft, *not* merged."""
    from peft import PeftModel

    model = load_model(base, settings, for_inference=for_inference, dtype=dtype)
    return PeftModel.from_pretrained(model, str(checkpoint)).eval()


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)

