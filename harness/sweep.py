"""``harness sweep``: one pipeline config over training seeds and varied fields, every variant a run of
:class:`harness.pipeline.Pipeline` into the same ``output_dir`` (one store, one checkpoint cache).

Variants are the seeds × the product of the ``--vary`` lists, run in order: seed by seed, and within a
seed variant by variant, so a stopped sweep has whole seeds. Everything a variant shares with an earlier
one is found by content: an unchanged upstream stage (the ``sft`` of every ``dpo.beta``) is the same
checkpoint hash and is not trained again, and its evaluations are reused from the store. A rerun of a
sweep resumes: each variant finds its run (same config) and continues it; a finished sweep trains and
evaluates nothing. ``seed`` is the training seed (the world's own ``world.seed`` stays as configured,
so every seed trains on the same data and is evaluated on the same items).

``--vary STAGE.FIELD=a,b`` sets a stage's field (``dpo.beta=0.1,0.2``; ``stages.dpo.beta`` works too);
any other dotted config key is taken as written (``world.annotator_length_bias=0,0.8``). Values are
YAML scalars, split on commas. Every variant's config is validated before anything runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.config import ConfigError, PipelineConfig, load_config

FORBIDDEN = ("seed", "output_dir")


@dataclass(frozen=True)
class Variant:
    seed: int
    choices: tuple[tuple[str, str], ...]  # (config key, value) of the --vary lists

    @property
    def overrides(self) -> list[str]:
        return [f"seed={self.seed}", *(f"{k}={v}" for k, v in self.choices)]

    @property
    def label(self) -> str:
        return " ".join([f"seed={self.seed}", *(f"{k.removeprefix('stages.')}={v}" for k, v in self.choices)])


@dataclass
class SweepResult:
    output_dir: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # per variant: label, run_id, trained, evaluated, wall_s
    failed: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def trained(self) -> list[str]:
        return [f"{r['label']}: {s}" for r in self.rows for s in r["trained"]]

    @property
    def evaluated(self) -> int:
        return sum(r["evaluated"] for r in self.rows)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct integers separated by commas, e.g. 0,1,2")
    return seeds


def parse_vary(items: list[str], cfg: PipelineConfig) -> list[list[tuple[str, str]]]:
    """Each ``KEY=a,b`` as [(config key, a), (config key, b)]; a leading stage name means ``stages.NAME``."""
    stages = {s.name for s in cfg.stages}
    out = []
    for item in items:
        key, eq, values = item.partition("=")
        key = key.strip()
        if not eq or not key or not values.strip():
            raise ConfigError(f"--vary {item!r}: expected STAGE.FIELD=a,b (e.g. dpo.beta=0.1,0.2)")
        if key.split(".", 1)[0] in stages:
            key = f"stages.{key}"
        if key in FORBIDDEN:
            raise ConfigError(f"--vary {item!r}: {key} is set by the sweep itself (use --seeds; one output_dir)")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if len(set(choices)) != len(choices):
            raise ConfigError(f"--vary {item!r}: a value is listed twice")
        out.append([(key, v) for v in choices])
    keys = [c[0][0] for c in out]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--vary: {', '.join(k for k in keys if keys.count(k) > 1)} is varied twice")
    return out


def plan(source: str, overrides: list[str], seeds: list[int], vary: list[str]) -> list[tuple[Variant, PipelineConfig]]:
    """Every variant with its validated config, in the order they run; one ``ConfigError`` for the first bad one."""
    base = load_config(source, overrides)
    lists = parse_vary(vary, base)
    out = []
    for seed in seeds:
        for combo in product(*lists):
            variant = Variant(seed, tuple(combo))
            try:
                cfg = load_config(source, [*overrides, *variant.overrides])
            except ConfigError as exc:
                raise ConfigError(f"variant {variant.label}: {exc}") from None
            out.append((variant, cfg))
    return out


def run_sweep(source: str, overrides: list[str], seeds: list[int], vary: list[str],
              console: Console | None = None, keep_going: bool = True) -> SweepResult:
    """Run every variant (module docstring); a failed variant is reported and the next one runs."""
    from harness.pipeline import Pipeline
    from training.runtime import StageFailed

    console = console or Console()
    variants = plan(source, overrides, seeds, vary)
    result = SweepResult(output_dir=variants[0][1].output_dir)
    start = time.perf_counter()
    console.print(f"sweep of {source}: {len(variants)} runs (seeds {', '.join(map(str, seeds))}"
                  + (f"; vary {', '.join(vary)}" if vary else "") + f") -> {result.output_dir}", highlight=False)
    for i, (variant, cfg) in enumerate(variants, 1):
        console.rule(escape(f"[{i}/{len(variants)}] {variant.label}"))
        t0 = time.perf_counter()
        try:
            run = Pipeline(cfg, console).run()
        except StageFailed as exc:
            result.failed.append(f"{variant.label}: {exc}".splitlines()[0])
            result.rows.append({"label": variant.label, "run_id": None, "trained": [], "evaluated": 0,
                                "wall_s": time.perf_counter() - t0, "status": "failed"})
            console.print(f"[red]{escape(variant.label)} failed[/]: {escape(str(exc))}", highlight=False)
            if not keep_going:
                break
            continue
        result.rows.append({"label": variant.label, "run_id": run.run_id, "trained": run.trained,
                            "evaluated": run.evaluated, "wall_s": run.wall_s, "status": "complete"})
    result.wall_s = time.perf_counter() - start
    print_sweep(result, console)
    return result


def print_sweep(result: SweepResult, console: Console) -> None:
    table = Table(title=f"Sweep -> {result.output_dir}")
    for h in ("variant", "run", "status", "trained", "evaluations computed", "wall s"):
        table.add_column(h, no_wrap=h == "run")
    for r in result.rows:
        table.add_row(escape(r["label"]), r["run_id"] or "—", r["status"], ", ".join(r["trained"]) or "nothing (cached)",
                      str(r["evaluated"]), f"{r['wall_s']:.1f}")
    console.print(table)
    console.print(f"sweep: {len(result.rows)} runs in {result.wall_s:.1f}s; trained {len(result.trained)} stages, "
                  f"computed {result.evaluated} evaluations" + (f"; {len(result.failed)} failed" if result.failed
                                                                 else ""), highlight=False)
