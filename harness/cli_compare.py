"""`harness sweep` and `harness compare`: methods across seeds and variants, and which differences are real."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)
EXIT_FAILED, EXIT_USAGE = 1, 2


def _usage(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    out, depth, cur = [], 0, ""
    for ch in text:  # commas inside a variant label ("dpo[dpo.beta=0.2, dpo.lr=1]") do not split
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [n for n in [*out, cur.strip()] if n]


def sweep(
    source: str = typer.Argument(..., help="Pipeline config YAML, or a packaged name (default, smoke)."),
    overrides: list[str] = typer.Argument(None, help="Dotted key=value overrides for every variant."),
    seeds: str = typer.Option("0", "--seeds", help="Training seeds, comma-separated: 0,1,2."),
    vary: list[str] = typer.Option(None, "--vary", help="STAGE.FIELD=a,b (repeatable; the product is swept)."),
    stop_on_failure: bool = typer.Option(False, "--stop-on-failure", help="Stop at the first failed variant."),
) -> None:
    """Run a config over seeds (and varied fields) into one store, sharing every unchanged stage through the
    cache; in order, resumable (a rerun trains and evaluates only what is missing).

    Example: harness sweep smoke --seeds 0,1 --vary dpo.beta=0.1,0.2 output_dir=runs/sweep
    """
    from harness.config import ConfigError
    from harness.sweep import parse_seeds, run_sweep

    try:
        result = run_sweep(source, overrides or [], parse_seeds(seeds), vary or [], console,
                           keep_going=not stop_on_failure)
    except ConfigError as exc:
        _usage(str(exc))
    if result.failed:
        for line in result.failed:
            err_console.print(f"[bold red]failed:[/] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)


def compare(
    store: Path = typer.Option(..., "--store", help="Results store file, or the output_dir holding it."),
    methods: str = typer.Option(..., "--methods", help="Stage names (every variant) or variant labels, "
                                "comma-separated: ppo,dpo,constitutional."),
    metrics: str | None = typer.Option(None, "--metrics", help="Metrics, comma-separated, or 'all' "
                                       "(default: the headline behaviour metrics measured)."),
    alpha: float | None = typer.Option(None, "--alpha", help="Family-wise α (default: the runs' attribution.alpha)."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Also write the tables as Markdown here."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write everything (per-seed tests too) as JSON."),
) -> None:
    """Compare methods across seeds: per method × metric the mean over seeds (seed-level CI) and the paired
    effect against the shared parent, per seed and pooled; for each pair of methods the paired difference
    per seed and pooled; Holm over the whole table.

    Example: harness compare --store runs/sweep --methods ppo,dpo,constitutional --markdown compare.md
    """
    from harness.compare import CompareError
    from harness.compare import compare as run_compare
    from harness.compare_render import print_compare, write_outputs
    from harness.core.store import Store, StoreError

    if alpha is not None and not 0 < alpha < 1:
        _usage(f"--alpha {alpha}: expected a number between 0 and 1")
    try:
        with Store(Store.resolve_path(store), readonly=True) as st:
            result = run_compare(st, _names(methods) or [], _names(metrics), alpha)
    except (StoreError, FileNotFoundError, CompareError) as exc:
        _usage(str(exc))
    print_compare(result, console)
    write_outputs(result, markdown, json_path)
