"""A pipeline config resolved against the registries: what ``load_config`` callers use.

The schema (pydantic models, YAML, ``key=value`` overrides, the stage graph's own checks)
is the core's :mod:`harness.core.spec`. Here the config meets what the core may not import:
stage kinds and their ``Config`` models, suites, backends and the world's knobs. Every
mistake is caught before any training starts and reported in one :class:`ConfigError`
whose lines read ``FILE: key.path: what was expected``.

Kind-specific stage fields sit inline in the stage (``{name: dpo, kind: dpo, beta: 0.1}``)
and are validated against that stage kind's own ``Config`` model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.backends import BACKENDS
from harness.core.config_errors import ConfigError, format_errors, loc_path, nested_errors, pydantic_msg
from harness.core.config_io import load_raw, packaged_configs
from harness.core.spec import (
    INIT,
    BackendSpec,
    DecodingSpec,
    FreshModel,
    GateRule,
    GateSpec,
    JudgeSpec,
    ModelSpec,
    PipelineConfig,
    StageSpec,
    SuiteSpec,
    WorldSpec,
    dump,
    graph_errors,
    topological_order,
)
from harness.world import WorldConfig, preset
from suites import SUITES
from training import STAGES
from training.data import hf_ref

__all__ = [
    "INIT", "BackendSpec", "ConfigError", "DecodingSpec", "FreshModel", "GateRule", "GateSpec",
    "JudgeSpec", "ModelSpec", "PipelineConfig", "StageSpec", "SuiteSpec", "WorldSpec", "dump",
    "load_config", "packaged_configs", "stage_config", "topological_order", "validate", "world_config",
]


def world_config(spec: WorldSpec) -> WorldConfig:
    """The validated world config: the preset plus the knobs written inline."""
    base = preset(spec.preset)
    return type(base).model_validate({**base.model_dump(), **(spec.model_extra or {})})


def stage_config(spec: StageSpec) -> Any:
    """The stage's kind-specific options validated against its kind's ``Config`` model."""
    return STAGES.get(spec.kind).Config.model_validate(spec.options())


def registry_errors(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """Checks that need the registries; returns (key path, message) pairs."""
    errors: list[tuple[str, str]] = []
    for i, spec in enumerate(cfg.stages):
        at = f"stages[{i}]"
        if spec.kind not in STAGES:
            errors.append((f"{at}.kind", STAGES.unknown_message(spec.kind)))
            continue
        stage_def = STAGES.get(spec.kind)
        names = [s.name for s in cfg.stages]
        if stage_def.needs_reward:
            if spec.reward is None:
                errors.append((f"{at}.reward", f"stage kind {spec.kind!r} needs `reward: <name of a reward stage>`"))
            elif spec.reward in names and cfg.stage(spec.reward).kind != "reward":
                errors.append((f"{at}.reward",
                               f"{spec.reward!r} is a {cfg.stage(spec.reward).kind!r} stage, expected kind 'reward'"))
        elif spec.reward is not None:
            errors.append((f"{at}.reward", f"stage kind {spec.kind!r} takes no reward model"))
        try:
            stage_def.Config.model_validate(spec.options())
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                errors.append((f"{at}.{loc}" if loc else at, pydantic_msg(err)))
        try:
            hf_ref(spec.data or "")  # `hf:` syntax only; the pipeline opens datasets before training
        except ValueError as exc:
            errors.append((f"{at}.data", str(exc)))
    for i, suite in enumerate(cfg.suites):
        if suite.name not in SUITES:
            errors.append((f"suites[{i}].name", SUITES.unknown_message(suite.name)))
        errors += judge_errors(suite.judge, f"suites[{i}].judge")
    if cfg.backend.name != "auto" and cfg.backend.name not in BACKENDS:
        errors.append(("backend.name", BACKENDS.unknown_message(cfg.backend.name) + " or 'auto'"))
    for key in ("tensor_parallel_size", "data_parallel_size"):
        if cfg.backend.name == "hf" and getattr(cfg.backend, key) > 1:
            errors.append((f"backend.{key}", "a vLLM setting; backend.name is 'hf' (one device per evaluation)"))
    if cfg.world is not None:
        try:
            world_config(cfg.world)
        except (ValidationError, ValueError, KeyError) as exc:
            errors += nested_errors("world", exc)
    return errors


def judge_errors(judge: Any, at: str) -> list[tuple[str, str]]:
    """A judge's files exist and its template is usable (before anything trains)."""
    from suites.judges import load_template

    errors = []
    if judge.kind == "llm" and not judge.model:
        errors.append((f"{at}.model", "judge.kind 'llm' needs judge.model: the judge model's folder"))
    if judge.template is not None:
        if judge.kind != "llm":
            errors.append((f"{at}.template", "a template is for an LLM judge (kind: llm)"))
        elif not Path(judge.template).is_file():
            errors.append((f"{at}.template", f"file not found: {judge.template}"))
        else:
            try:
                load_template(judge.template)
            except ValueError as exc:
                errors.append((f"{at}.template", str(exc)))
    for j, path in enumerate(judge.validation):
        if not Path(path).is_file():
            errors.append((f"{at}.validation[{j}]", f"file not found: {path} (human-labelled completions, CSV)"))
    return errors


def validate(raw: dict[str, Any], display: str = "<config>") -> PipelineConfig:
    """Validate a raw dict completely: schema, stage graph, registries; one error lists every problem."""
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise format_errors(display, [(loc_path(e["loc"]), pydantic_msg(e)) for e in exc.errors()]) from None
    errors = graph_errors(cfg) + registry_errors(cfg)
    if errors:
        raise format_errors(display, errors)
    return cfg


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load a YAML file or packaged config name, apply ``key=value`` overrides, validate everything."""
    display, raw = load_raw(source, overrides)
    return validate(raw, display)
