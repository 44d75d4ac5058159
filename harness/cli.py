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

from harness.cli_compare import compare as compare_command
from harness.cli_compare import sweep as sweep_command
from harness.cli_judge import judge_app
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
app.add_typer(judge_app, name="judge")
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


def _load(source: str, overrides: list[str] | None):
    try:
        return load_config(source, overrides or [])
    except ConfigError as exc:
        _fail_usage(str(exc))


@app.command("run")
def run(
    source: str = typer.Argument(..., help="Pipeline config YAML, or a packaged name (default, smoke)."),
    overrides: list[str] = typer.Argument(None, help="Dotted key=value overrides, e.g. stages.dpo.beta=0.2"),
    new_run: bool = typer.Option(False, "--new-run", help="Start a new run id even if an identical run exists."),
    wide: bool = typer.Option(False, "--wide", help="Print the summary as one wide table (metric x every stage)."),
    launch: str | None = typer.Option(None, "--launch", help="Train each stage under `accelerate launch`: single, "
                                      "ddp, fsdp, zero2, zero3 (configs/accelerate/) or an accelerate config YAML."),
    num_processes: int | None = typer.Option(None, "--num-processes", help="With --launch: processes over all machines."),
    num_machines: int = typer.Option(1, "--num-machines", help="With --launch: machines, each running this command."),
    machine_rank: int = typer.Option(0, "--machine-rank", help="With --launch: this machine (0 evaluates and stores)."),
    main_address: str | None = typer.Option(None, "--main-address", help="With --launch: machine 0's address."),
    main_port: int | None = typer.Option(None, "--main-port", help="With --launch: machine 0's rendezvous port."),
) -> None:
    """Train every stage and evaluate every checkpoint; reruns redo only what changed.

    Example: harness run default stages.dpo.beta=0.2 (across 2 GPUs: --launch ddp --num-processes 2)
    """
    from harness.launch import LaunchError, plan_or_follow
    from harness.pipeline import Pipeline
    from training.runtime import StageFailed

    cfg = _load(source, overrides)
    try:
        plan = plan_or_follow(cfg, console, launch, num_processes, num_machines, machine_rank, main_address, main_port)
        if plan is not None and plan.machine_rank > 0:
            return
        result = Pipeline(cfg, console, new_run=new_run, launch=plan, wide=wide).run()
    except LaunchError as exc:
        _fail_usage(str(exc))
    except ConfigError as exc:  # e.g. an `hf:` dataset that can not be opened, found before training
        _fail_usage(str(exc))
    except StageFailed as exc:
        err_console.print(f"[bold red]stage failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    trained = ", ".join(result.trained) or "nothing (all cached)"
    console.print(
        f"run {result.run_id} complete in {result.wall_s:.1f}s; trained: {trained}; "
        f"evaluations computed: {result.evaluated}; summary: {result.summary_path}"
    )


@app.command("train")
def train(
    stage: str = typer.Argument(..., help="Name of the stage to train (its inputs must already exist)."),
    config: str = typer.Option(..., "--config", help="Pipeline config YAML or packaged name."),
    overrides: list[str] = typer.Argument(None, help="Dotted key=value overrides."),
) -> None:
    """Train one stage of a pipeline, for debugging (no evaluation, no store).

    Example: harness train dpo --config smoke stages.dpo.beta=0.3
    """
    from harness.pipeline import Pipeline
    from training.runtime import StageFailed

    cfg = _load(config, overrides)
    try:
        ckpt = Pipeline(cfg, console).train_one(stage)
    except ConfigError as exc:
        _fail_usage(str(exc))
    except KeyError:
        _fail_usage(f"no stage named {stage!r} (stages: {', '.join(s.name for s in cfg.stages)})")
    except (StageFailed, RuntimeError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    console.print(f"{stage}: {ckpt.path}")


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="A checkpoint folder (harness-made, or any HF causal LM)."),
    suites: list[str] = typer.Option(..., "--suite", help="Suite to run; repeat for several."),
    data: Path | None = typer.Option(None, "--data", help="Items file (for a single suite); default: --world's."),
    world: Path | None = typer.Option(None, "--world", help="A generated world folder to take items from."),
    backend: str = typer.Option("auto", "--backend", help="auto | hf | vllm"),
    reward: Path | None = typer.Option(None, "--reward", help="Reward checkpoint that scores verbosity."),
    kind: str | None = typer.Option(None, "--kind", help="Stage kind (default: from the manifest; else sft)."),
    store: Path | None = typer.Option(None, "--store", help="Write results to this store (file or output_dir)."),
    max_items: int | None = typer.Option(None, "--max-items", help="Evaluate only N items per suite."),
    wide: bool = typer.Option(False, "--wide", help="Print the metrics as one wide table (full names in a column)."),
) -> None:
    """Run suites on one checkpoint and print metrics with 95% CIs.

    Example: harness eval runs/smoke/checkpoints/sft-1a2b3c4d5e6f --suite refusal --suite verbosity --world runs/smoke/worlds/abc
    """
    from harness.adhoc import evaluate_checkpoint
    from harness.progress_display import progress_display

    if data is not None and len(suites) != 1:
        _fail_usage("--data names the items of one suite; give exactly one --suite with it")
    try:
        with progress_display(console):  # a bar per suite: prompts done, tokens/s, ETA
            table = evaluate_checkpoint(checkpoint, suites, data, world, backend, reward, kind, store, max_items)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        _fail_usage(str(exc))
    from harness.summary import print_metrics

    print_metrics(table, f"{checkpoint}", console, wide)


@app.command("report")
def report(
    store: Path = typer.Option(Path("runs/default"), "--store", help="Results store file, or the output_dir holding it."),
    run_id: str | None = typer.Option(None, "--run", help="Run id (default: the latest run)."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Also write the report as Markdown here."),
    wide: bool = typer.Option(False, "--wide", help="One wide table each (needs ~150 columns); default: blocks "
                              "that fit the terminal."),
    dashboard_url: str | None = typer.Option(None, "--dashboard-url",
                                             help="Dashboard base URL: print links to the exact views."),
) -> None:
    """Print a run's summary (metric per checkpoint) and its stage attribution.

    Example: harness report --store runs/default --markdown report.md
    """
    from harness.core.store import Store, StoreError
    from harness.report import print_report, render_report
    from harness.summary import print_table, summary_table

    try:
        with Store(Store.resolve_path(store), readonly=True) as st:
            rid = st.require_run(run_id)
            print_table(summary_table(st, rid), f"Run {rid}: metric per checkpoint", console, wide)
            print_report(st, rid, console, wide)
            links = ""
            if dashboard_url:
                from harness.dashboard_links import markdown_links, report_links

                links = markdown_links(report_links(dashboard_url, rid, st.effects(rid)))
                console.print(links, highlight=False, markup=False, soft_wrap=True)
            if markdown is not None:
                markdown.write_text(render_report(st, rid) + ("\n" + links if links else ""), encoding="utf-8")
    except (StoreError, FileNotFoundError, KeyError, ValueError) as exc:
        _fail_usage(str(exc))


@app.command("export")
def export(
    store: Path = typer.Option(..., "--store", help="Results store file, or the output_dir holding it."),
    out: Path | None = typer.Option(None, "--out", help="lm-eval: the folder to write (required); mlflow: the "
                                    "local file store (default <output_dir>/mlruns); wandb: where wandb/ goes "
                                    "(default <output_dir>)."),
    run_id: str | None = typer.Option(None, "--run", help="Run id (default: the latest run)."),
    fmt: str = typer.Option("lm-eval", "--format", help="lm-eval, mlflow or wandb (offline; `wandb sync` later)."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="mlflow: any tracking URI "
                                            "(sqlite:///mlflow.db, http://host:5000); default a file store."),
    experiment: str | None = typer.Option(None, "--experiment", help="mlflow experiment / wandb project "
                                          "(default: the run's config name)."),
) -> None:
    """Export a run: lm-eval-shaped results files, or an MLflow run with a nested run per stage, or
    offline W&B runs (params from the config, metrics with CIs, effects table and report).

    Example: harness export --store runs/default --format mlflow
    """
    from rich.markup import escape

    from harness.core.store import Store, StoreError
    from harness.export import EXPORTERS, ExportError, ExportOptions

    try:
        writer = EXPORTERS.get(fmt)
        path = Store.resolve_path(store)
        with Store(path, readonly=True) as st:
            lines = writer(st, st.require_run(run_id), ExportOptions(path.parent, out, tracking_uri, experiment))
    except (StoreError, ExportError, FileNotFoundError, KeyError, ValueError) as exc:
        _fail_usage(escape(str(exc)))  # names extras as alignment-harness[mlflow]: not markup
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command("gate")
def gate(
    store: Path = typer.Option(..., "--store", help="Results store file, or the output_dir holding it."),
    run_id: str | None = typer.Option(None, "--run", help="Run id (default: the latest run)."),
    candidate: str = typer.Option(..., "--candidate", help="Stage to gate, e.g. ppo."),
    baseline: str | None = typer.Option(None, "--baseline", help="Stage to compare against, e.g. sft."),
    rules: Path | None = typer.Option(None, "--rules", help="Gate rules YAML (default: the run config's gate:)."),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here."),
    summary: Path | None = typer.Option(None, "--summary", help="Write the Markdown summary here."),
    json_path: Path | None = typer.Option(None, "--json", help="Write gate_report.json here."),
    dashboard_url: str | None = typer.Option(None, "--dashboard-url",
                                             help="Dashboard base URL: link each rule's views in the summary."),
) -> None:
    """Gate a checkpoint against thresholds and a baseline (exit 0 pass, 1 failed, 2 usage/config, 3 internal).

    Relative bounds follow the rules' mode:
    significance: fail when the regression is shown to exceed the margin;
    crossed but not shown is inconclusive (exit code from on_inconclusive).
    non_inferiority: pass only when shown to be within the margin.
    strict: the point estimate decides.
    Every relative rule reports the regression detectable with 80% power.

    Example: harness gate --store runs/default --candidate ppo --baseline sft --rules examples/gate_rules.yaml
    """
    from harness.gate import run_gate

    raise typer.Exit(run_gate(store, run_id, candidate, baseline, rules, junit, summary, json_path,
                              dashboard_url=dashboard_url))


@app.command("dashboard")
def dashboard(
    stores: list[Path] = typer.Option([Path("runs/default")], "--store",
                                      help="Results store file, or the output_dir holding it; repeat for several. "
                                           "Visitors can open only these."),
    port: int = typer.Option(8501, "--port", help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", "--address",
                                help="Interface to listen on; anything beyond loopback (e.g. 0.0.0.0) exposes every "
                                     "stored sample to whoever reaches the port: see README, Sharing the dashboard."),
) -> None:
    """Serve the Streamlit dashboard on results stores (read-only); stops with it on SIGTERM / Ctrl-C.

    Example: harness dashboard --store runs/default --store runs/smoke --port 8501
    """
    from harness.core.store import Store, StoreError
    from harness.dashboard_server import serve

    paths: list[str] = []
    try:
        paths = list(dict.fromkeys(str(Store.resolve_path(store)) for store in stores))
    except (StoreError, FileNotFoundError) as exc:
        _fail_usage(str(exc))
    console.print(f"dashboard on http://{address}:{port} for {', '.join(paths)}", highlight=False)
    raise typer.Exit(serve(paths, port, address))


app.command("sweep")(sweep_command)
app.command("compare")(compare_command)


def main() -> None:  # pragma: no cover - console entry for `python -m harness.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
