"""What each teacher API accepts: token-limit name, rejected parameters, thinking budget (as data).

"OpenAI-compatible" APIs differ in small ways that turn every request into a 400:
OpenAI's o-series and gpt-5 want ``max_completion_tokens`` and reject ``temperature``;
DashScope takes a thinking budget in the body and thinks only when streamed; R1-style
reasoners need thousands of tokens before they answer. These differences live in
``data/teacher/api_quirks.yaml`` (model-name patterns -> settings), environment
variables override them, and :func:`shape_request` applies them to every request, so
the engine, :func:`~helpers.teacher.client.chat` and the Batch API send the same thing.

For a model the file does not know, :func:`adapt_request` reads the API's 400
("Unsupported parameter: 'max_tokens'", "'temperature' is not supported") once,
remembers the fix for that endpoint for the rest of the process, and returns the
request to send again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..core.config import REPO_ROOT, TeacherEndpoint

log = logging.getLogger(__name__)

QUIRKS_PATH: Path = REPO_ROOT / "data" / "teacher" / "api_quirks.yaml"
TOKEN_PARAM_ENV = "TEACHER_TOKEN_PARAM"
"""``max_tokens`` or ``max_completion_tokens``: the name of the token limit, whatever the file says."""
DROP_PARAMS_ENV = "TEACHER_DROP_PARAMS"
"""Comma-separated parameters to leave out of every request (``temperature,top_p``)."""
MAX_TOKENS_ENV = "TEACHER_MAX_TOKENS"
"""The token limit of a teacher call when the caller gives none (beats the file's default)."""
THINKING_BUDGET_ENV = "TEACHER_THINKING_BUDGET"
"""The thinking budget sent where the API takes one (default: 3/4 of the token limit)."""

DEFAULT_MAX_TOKENS = 512
"""The token limit of a non-reasoning teacher when neither the caller nor the environment sets one."""
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
BUDGET_PLACEHOLDER = "$thinking_budget"
_KEEP = {"model", "messages", "stream", "extra_body"}
"""Never dropped, whatever an error message names."""


@dataclass(frozen=True)
class ApiQuirks:
    """How to talk to one model at one endpoint (the merged rules, environment and learned fixes)."""

    token_param: str = "max_tokens"
    drop: frozenset[str] = frozenset()
    reasoning: bool = False
    """The model thinks before answering: larger default limit, larger retry when cut off."""
    max_tokens: int | None = None
    """The default token limit for this model (None: :data:`DEFAULT_MAX_TOKENS`)."""
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    rules: tuple[str, ...] = ()
    """Names of the rules (and ``env``, ``learned``) that made these quirks, for messages."""


@lru_cache(maxsize=4)
def load_rules(path: Path = QUIRKS_PATH) -> tuple[dict[str, Any], ...]:
    """The rules of a quirks file, checked (a missing file means no rules)."""
    if not Path(path).is_file():
        log.warning("API quirks file %s not found: requests are sent as plain OpenAI chat calls", path)
        return ()
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    rules = data.get("rules") or []
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or not isinstance(rule.get("match"), str):
            raise ValueError(f"{path}: rule {i} needs a 'match' pattern (a regular expression)")
        if rule.get("token_param", "max_tokens") not in TOKEN_PARAMS:
            raise ValueError(f"{path}: rule {rule.get('name', i)!r}: token_param must be one of {TOKEN_PARAMS}")
        re.compile(rule["match"])
        re.compile(rule.get("base_url") or "")
        out.append(dict(rule, name=str(rule.get("name") or rule["match"])))
    return tuple(out)


# --------------------------------------------------------------------------- what an endpoint needs

_learned: dict[tuple[str, str], dict[str, Any]] = {}
_learned_lock = threading.Lock()


def _where(endpoint: TeacherEndpoint) -> tuple[str, str]:
    return endpoint.base_url.rstrip("/"), endpoint.model


def quirks_for(endpoint: TeacherEndpoint, env: Mapping[str, str] | None = None,
               path: Path | None = None) -> ApiQuirks:
    """The quirks of ``endpoint``: matching file rules, then environment overrides, then learned fixes."""
    env = os.environ if env is None else env
    quirks = ApiQuirks()
    for rule in load_rules(path or QUIRKS_PATH):
        if not re.search(rule["match"], endpoint.model, re.IGNORECASE):
            continue
        if rule.get("base_url") and not re.search(rule["base_url"], endpoint.base_url, re.IGNORECASE):
            continue
        quirks = replace(
            quirks, token_param=rule.get("token_param", quirks.token_param),
            drop=quirks.drop | frozenset(rule.get("drop") or ()),
            reasoning=bool(rule.get("reasoning", quirks.reasoning)),
            max_tokens=rule.get("max_tokens", quirks.max_tokens),
            extra_body={**quirks.extra_body, **(rule.get("extra_body") or {})},
            stream=bool(rule.get("stream", quirks.stream)), rules=quirks.rules + (rule["name"],))
    token_param = (env.get(TOKEN_PARAM_ENV) or "").strip()
    if token_param:
        if token_param not in TOKEN_PARAMS:
            raise ValueError(f"{TOKEN_PARAM_ENV}={token_param!r} must be one of {TOKEN_PARAMS}")
        quirks = replace(quirks, token_param=token_param, rules=quirks.rules + ("env",))
    dropped = {p.strip() for p in (env.get(DROP_PARAMS_ENV) or "").split(",") if p.strip()}
    if dropped:
        quirks = replace(quirks, drop=quirks.drop | dropped, rules=quirks.rules + ("env",))
    with _learned_lock:
        learned = dict(_learned.get(_where(endpoint), {}))
    if learned:
        quirks = replace(quirks, token_param=learned.get("token_param", quirks.token_param),
                         drop=quirks.drop | learned.get("drop", frozenset()), rules=quirks.rules + ("learned",))
    return quirks


def _positive_env(env: Mapping[str, str], name: str) -> int | None:
    text = (env.get(name) or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} must be a whole number of tokens") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def default_max_tokens(endpoint: TeacherEndpoint, env: Mapping[str, str] | None = None) -> int:
    """The token limit when the caller gives none: ``TEACHER_MAX_TOKENS``, else the model's
    default from the quirks file (8192 for R1-style reasoners), else :data:`DEFAULT_MAX_TOKENS`."""
    env = os.environ if env is None else env
    return (_positive_env(env, MAX_TOKENS_ENV) or quirks_for(endpoint, env).max_tokens
            or DEFAULT_MAX_TOKENS)


def thinking_budget(max_tokens: int, explicit: int | None = None,
                    env: Mapping[str, str] | None = None) -> int:
    """The thinking budget for a token limit: ``explicit``, ``TEACHER_THINKING_BUDGET``, else 3/4 of it
    (a quarter stays for the answer); never more than ``max_tokens - 1``."""
    env = os.environ if env is None else env
    budget = explicit or _positive_env(env, THINKING_BUDGET_ENV) or max(1, max_tokens * 3 // 4)
    return max(1, min(int(budget), max_tokens - 1)) if max_tokens > 1 else 1


def token_limit(request: Mapping[str, Any]) -> int | None:
    """The token limit of a request, whatever its name."""
    for name in TOKEN_PARAMS:
        if request.get(name) is not None:
            return int(request[name])
    return None


def shape_request(endpoint: TeacherEndpoint, request: Mapping[str, Any], *,
                  budget: int | None = None, quirks: ApiQuirks | None = None) -> dict[str, Any]:
    """``request`` (``chat.completions.create`` keyword arguments) as this endpoint accepts it.

    Renames the token limit, leaves out rejected parameters, adds the quirks'
    ``extra_body`` (the caller's own ``extra_body`` wins) and turns streaming on where
    the API needs it. Idempotent: shaping a shaped request changes nothing.
    """
    quirks = quirks or quirks_for(endpoint)
    out = dict(request)
    limit = token_limit(out)
    for name in TOKEN_PARAMS:
        out.pop(name, None)
    if limit is not None:
        out[quirks.token_param] = limit
    if quirks.extra_body:
        value = thinking_budget(limit or DEFAULT_MAX_TOKENS, budget)
        extra = {k: (value if v == BUDGET_PLACEHOLDER else v) for k, v in quirks.extra_body.items()}
        out["extra_body"] = {**extra, **(out.get("extra_body") or {})}
    if quirks.stream and not out.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    dropped = quirks.drop - _KEEP - {quirks.token_param}
    for name in dropped:
        out.pop(name, None)
    if out.get("extra_body") and dropped & set(out["extra_body"]):
        out["extra_body"] = {k: v for k, v in out["extra_body"].items() if k not in dropped}
    return out


# --------------------------------------------------------------------------- learning from a 400

_NAMED = [
    re.compile(r"unsupported (?:parameter|value):?\s*'([A-Za-z_]+)'", re.IGNORECASE),
    re.compile(r"'([A-Za-z_]+)' (?:is not supported|does not support)", re.IGNORECASE),
    re.compile(r"\b([A-Za-z_]+) (?:is )?not supported", re.IGNORECASE),
    re.compile(r"(?:unknown|unrecognized|unexpected) (?:field|parameter|argument|request argument)"
               r"(?: supplied)?:?\s*[`'\"]?([A-Za-z_]+)", re.IGNORECASE),
]


def rejected_parameter(request: Mapping[str, Any], status: int | None, error: Any) -> str | None:
    """The request parameter a 400/422 error names as unsupported (None when it names none we sent).

    ``error`` is the error body (``{"message", "param", "code"}``, or wrapped in ``"error"``) or its text.
    """
    if status not in (400, 422):
        return None
    if isinstance(error, Mapping):
        inner = error.get("error", error)
        inner = inner if isinstance(inner, Mapping) else {"message": str(inner)}
        candidates = [inner.get("param")] if isinstance(inner.get("param"), str) else []
        message = str(inner.get("message") or "")
    else:
        candidates, message = [], str(error or "")
    candidates += [m.group(1) for pattern in _NAMED for m in pattern.finditer(message)]
    extra = request.get("extra_body") or {}
    for name in candidates:
        if name not in _KEEP and (name in request or name in extra):
            return name
    return None


def adapt_request(endpoint: TeacherEndpoint, request: Mapping[str, Any], status: int | None,
                  error: Any) -> dict[str, Any] | None:
    """The request to send again after the API rejected one of its parameters, or None.

    ``max_tokens`` becomes ``max_completion_tokens`` (and back, for a server that only
    knows the old name); any other named parameter is left out. The fix is remembered
    for the endpoint, so later requests are shaped right from the start.
    """
    name = rejected_parameter(request, status, error)
    if name is None:
        return None
    out = dict(request)
    with _learned_lock:
        learned = _learned.setdefault(_where(endpoint), {})
        if name in TOKEN_PARAMS:
            other = TOKEN_PARAMS[1 - TOKEN_PARAMS.index(name)]
            if learned.get("token_param") == name:  # it was switched to this name: it rejects both
                return None
            learned["token_param"] = other
            out[other] = out.pop(name)
            fix = f"sending {other} instead"
        else:
            learned["drop"] = learned.get("drop", frozenset()) | {name}
            out.pop(name, None)
            if name in (out.get("extra_body") or {}):
                out["extra_body"] = {k: v for k, v in out["extra_body"].items() if k != name}
            fix = f"leaving {name!r} out"
    log.warning("%s rejected %r for model %s: %s from now on (a rule in %s would save this 400)",
                endpoint.base_url, name, endpoint.model, fix, QUIRKS_PATH.name)
    return out


def adapt_to_error(endpoint: TeacherEndpoint, request: Mapping[str, Any], exc: BaseException) -> dict[str, Any] | None:
    """:func:`adapt_request` for an exception of the ``openai`` client (None for any other error)."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    return adapt_request(endpoint, request, status, body if body is not None else str(exc))


def forget_adaptations() -> None:
    """Forget what was learned from 400s (tests; or after switching an endpoint's model version)."""
    with _learned_lock:
        _learned.clear()
