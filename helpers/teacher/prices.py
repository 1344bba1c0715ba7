"""What teacher tokens cost: model-name patterns -> USD per 1M input and output tokens (``data/prices.json``)."""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.config import REPO_ROOT

log = logging.getLogger(__name__)

PRICES_PATH: Path = REPO_ROOT / "data" / "prices.json"


class PriceTable:
    """Model-name pattern -> USD per 1M input and output tokens (see ``data/prices.json``)."""

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self.entries = [dict(e) for e in entries]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PriceTable":
        path = Path(path) if path is not None else PRICES_PATH
        if not path.exists():
            log.warning("price table %s not found: costs will show as n/a", path)
            return cls([])
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("models", []) if isinstance(data, Mapping) else data
        for i, entry in enumerate(entries):
            if not {"pattern", "input", "output"} <= set(entry):
                raise ValueError(f"{path}: models[{i}] needs 'pattern', 'input' and 'output'")
        return cls(entries)

    def lookup(self, model: str) -> tuple[float, float] | None:
        names = {model.lower(), model.lower().rsplit("/", 1)[-1]}
        for entry in self.entries:
            pattern = str(entry["pattern"]).lower()
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                return float(entry["input"]), float(entry["output"])
        return None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.lookup(model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000

