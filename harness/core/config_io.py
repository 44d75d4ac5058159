"""Reading a pipeline config: packaged names or files, YAML, ``dotted.key=value`` overrides."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.core.config_errors import ConfigError, parse_yaml
from harness.core.spec import PipelineConfig


def packaged_configs() -> list[str]:
    """Names of the configs shipped inside the package (``harness run NAME``)."""
    root = resources.files("harness") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_source(source: str | Path) -> tuple[str, str]:
    """(display name, YAML text) for a config file path or a packaged config name."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return str(path), path.read_text(encoding="utf-8")
    name = str(source)
    if name in packaged_configs():
        return f"<packaged:{name}>", (resources.files("harness") / "configs" / f"{name}.yaml").read_text("utf-8")
    raise ConfigError(
        f"{source}: no such config file, and not a packaged config (packaged: {', '.join(packaged_configs())})"
    )


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML). Lists of named items are indexed by name or number."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. stages.dpo.beta=0.2")
    key, _, text = override.partition("=")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from None
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            idx = _list_index(node, part)
            if idx is None:
                names = [item.get("name") for item in node if isinstance(item, dict)]
                raise ConfigError(f"override {override!r}: {where}: no item named {part!r} (have {names})")
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif part not in node or node[part] is None:
                node[part] = {}
                node = node[part]
            else:
                node = node[part]
        else:
            raise ConfigError(f"override {override!r}: {'.'.join(parts[:depth])} is a value, not a mapping")


def _list_index(items: list[Any], part: str) -> int | None:
    if part.isdigit() and int(part) < len(items):
        return int(part)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None


def load_raw(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """(display name, raw dict) after YAML parsing and overrides; no validation."""
    display, text = resolve_source(source)
    raw = parse_yaml(text, display)
    if raw is None:
        raise ConfigError(f"{display}: the file is empty; expected a mapping with at least `name` and `output_dir`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{display}: expected a mapping at the top level, got {type(raw).__name__}")
    known = set(PipelineConfig.model_fields)
    for override in overrides:
        top = override.partition("=")[0].split(".")[0].strip()
        if top not in known:
            raise ConfigError(f"override {override!r}: unknown top-level key {top!r} (known: {', '.join(sorted(known))})")
        apply_override(raw, override)
    return display, raw
