"""The ``harness`` command line. Each command is thin: it parses, calls one module, prints.

Exit codes: 0 ok, 1 the command ran and found a failure (a failed stage, a failed gate),
2 usage or config error, 3 internal error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console

from harness.config import ConfigError, dump, load_config

app = typer.Typer(
    name="harness",
    help="Alignment benchmark harness: train pretrain -> SFT -> reward/PPO and DPO, evaluate behaviour after "
    "every stage, attribute each shift to the stage that caused it.\n\nExample: harness run smoke",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate and show pipeline configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def _fail_usage(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


@config_app.command("validate")
def config_validate(
    source: str = typer.Argument(..., help="Config YAML file, or a packaged config name (default, smoke)."),
    overrides: list[str] = typer.Argument(None, help="Dotted key=value overrides, e.g. stages.dpo.beta=0.2"),
) -> None:
    """Validate a pipeline config completely (schema, stage graph, registries) without running anything.

    Example: harness config validate my_experiment.yaml seed=3
    """
    try:
        cfg = load_config(source, overrides or [])
    except ConfigError as exc:
        _fail_usage(str(exc))
    console.print(f"[green]ok[/]: {source} ({len(cfg.stages)} stages, {len(cfg.suites)} suites)")


@config_app.command("show")
def config_show(
    source: str = typer.Argument(..., help="Config YAML file, or a packaged config name (default, smoke)."),
    overrides: list[str] = typer.Argument(None, help="Dotted key=value overrides, e.g. backend.name=hf"),
) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML.

    Example: harness config show default stages.dpo.beta=0.2
    """
    try:
        cfg = load_config(source, overrides or [])
    except ConfigError as exc:
        _fail_usage(str(exc))
    sys.stdout.write(yaml.safe_dump(dump(cfg), sort_keys=False))


@app.command("world")
def world(
    out: Path = typer.Option(..., "--out", help="Directory to write the world into."),
    config: str = typer.Option("default", "--config", help="World preset (default, smoke) or a world YAML file."),
    overrides: list[str] = typer.Argument(None, help="World knobs as key=value, e.g. annotator_length_bias=0"),
) -> None:
    """Generate the deterministic synthetic world (tokenizer, data for every stage, eval items, world card).

    Example: harness world --out /tmp/world seed=7 annotator_length_bias=0
    """
    import time

    from harness.world import config_from, generate

    try:
        world_cfg = config_from(config, overrides or [])
    except (ValueError, KeyError, FileNotFoundError) as exc:
        _fail_usage(str(exc))
    start = time.perf_counter()
    card = generate(world_cfg, out)
    console.print(f"wrote world to {out} in {time.perf_counter() - start:.1f}s ({len(card['files'])} files)")
    for effect in card.get("expected_effects", []):
        console.print(f"  expected: {effect['stage']:>8}  {effect['metric']:<40} {effect['direction']}")


def main() -> None:  # pragma: no cover - console entry for `python -m harness.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
