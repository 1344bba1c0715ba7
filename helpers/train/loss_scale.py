r"""Do the thinking tokens count in the loss? ``think_loss`` and ms-swift's loss scales.

``"train"`` (swift's ``--loss_scale default``): every token of the reply counts,
the ``<think>`` reasoning *and* the answer; that is what distils reasoning.
``"ignore_empty"`` (swift's ``ignore_empty_think``): only an *empty*
``<think></think>`` is masked, so rows without reasoning do not teach "think nothing".
``"ignore"`` masks the whole ``<think>...</think>`` span so only the answer is
learned (an ablation: does the student need the reasoning?). swift 4.6 has no
preset for that, so the course registers one, ``ignore_think``, through swift's
extension point: ``--external_plugins OUT/course_plugins.py`` calls
:func:`register_loss_scales`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

ThinkLoss = Literal["train", "ignore_empty", "ignore"]


THINK_LOSS_SCALE: dict[str, str] = {
    "train": "default",
    "ignore_empty": "ignore_empty_think",
    "ignore": "ignore_think",
}
"""``think_loss`` -> the ``--loss_scale`` value passed to ms-swift."""


IGNORE_THINK = "ignore_think"
"""Name of the course's loss scale (registered by :func:`register_loss_scales`)."""


THINK_SPAN_PATTERN = r"^\s*<think>.*?</think>\s*"
"""The span ``ignore_think`` masks: the reasoning block at the start of the reply and the blank
lines after it. No capturing groups: swift joins the patterns into one ``re.split``."""


PLUGIN_FILE = "course_plugins.py"


PLUGIN_SOURCE = '''"""ms-swift plugin written by helpers.train.loss_scale: registers the course's extra loss scales.

Passed to swift with --external_plugins; it adds the `ignore_think` loss scale
(mask the <think>...</think> span, train on the answer only).
"""
from helpers.train.loss_scale import register_loss_scales

register_loss_scales()
'''


def register_loss_scales() -> None:
    """Add ``ignore_think`` to ms-swift's table of loss scales (idempotent).

    Built on swift's ``ConfigLossScale``: a regex -> weight table applied to each
    assistant response. Weight ``0.0`` for :data:`THINK_SPAN_PATTERN`, ``1.0``
    (the default) for everything after it, so only the answer is in the loss.
    """
    from swift.loss_scale import ConfigLossScale, loss_scale_map

    if IGNORE_THINK in loss_scale_map:
        return

    class IgnoreThinkLossScale(ConfigLossScale):
        """Mask the ``<think>...</think>`` block of each response; train on the answer."""

        def __init__(self, base_strategy: str = "default") -> None:
            super().__init__(base_strategy)  # type: ignore[arg-type]
            self.loss_scale_map = {THINK_SPAN_PATTERN: [0.0]}

    loss_scale_map[IGNORE_THINK] = IgnoreThinkLossScale


def _swift_loss_scale_config(name: str) -> dict[str, list[float]]:
    """A preset's regex table, read from swift's package data without importing swift (slow)."""
    import importlib.util

    spec = importlib.util.find_spec("swift")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "loss_scale" / "config" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"ms-swift's loss scale config {name}.json was not found; is ms-swift installed?")


def loss_scale_parts(response: str, think_loss: ThinkLoss = "train") -> list[tuple[str, float]]:
    """How one assistant reply is weighted in the loss: ``[(text, weight), ...]``.

    The same splitting ms-swift applies (regex parts, each matched part gets its
    weight, the rest 1.0), done here without importing swift so a notebook can
    show it instantly; the tests check it against swift's own ``get_loss_scale``.
    """
    if think_loss not in THINK_LOSS_SCALE:
        raise ValueError(f"think_loss must be one of {sorted(THINK_LOSS_SCALE)}, got {think_loss!r}")
    if think_loss == "train":
        return [(response, 1.0)]
    table = ({THINK_SPAN_PATTERN: [0.0]} if think_loss == "ignore"
             else _swift_loss_scale_config(THINK_LOSS_SCALE[think_loss]))
    combined = "|".join(f"({pattern})" for pattern in table)
    parts = [p for p in re.split(combined, response, flags=re.DOTALL) if p]
    out: list[tuple[str, float]] = []
    for part in parts:
        weight = next((w[0] for pattern, w in table.items() if re.match(pattern, part, re.DOTALL)), 1.0)
        out.append((part, float(weight)))
    return out

