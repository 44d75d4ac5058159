"""Config errors: one :class:`ConfigError` whose lines read ``FILE: key.path: what was expected``."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration a user wrote is invalid. The message names file, key path and expectation."""


def parse_yaml(text: str, display: str) -> Any:
    """YAML text parsed, or a ConfigError naming ``display`` and the line and column of the mistake."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{display}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None


def pydantic_msg(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not a field here; check the spelling)"
    if err["type"] == "missing":
        return "required field is missing"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    return f"{err['msg']} (got {shown})"


def nested_errors(prefix: str, exc: Exception) -> list[tuple[str, str]]:
    if isinstance(exc, ValidationError):
        return [
            (".".join([prefix, *(str(p) for p in e["loc"])]), pydantic_msg(e)) for e in exc.errors()
        ]
    return [(prefix, str(exc))]


def format_errors(source: str, errors: list[tuple[str, str]]) -> ConfigError:
    lines = [f"{source}: {path}: {msg}" for path, msg in errors]
    head = f"invalid config {source} ({len(errors)} error{'s' if len(errors) != 1 else ''}):\n  "
    return ConfigError(head + "\n  ".join(lines))


def loc_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
