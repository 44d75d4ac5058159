"""`harness judge ...`: judges measured against human labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console

from harness.config import BackendSpec, JudgeSpec

judge_app = typer.Typer(help="Check a judge against human-labelled completions.", no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True)


@judge_app.command("check")
def check(
    file: Path = typer.Argument(..., help="CSV of human-labelled completions: prompt, completion, final_label "
                                "(XSTest classes) or label (refuse / partial / comply); optional type."),
    judge: str = typer.Option("rules", "--judge", help="rules, or llm (with --judge-model)."),
    judge_model: Path = typer.Option(None, "--judge-model", help="Judge model folder (implies --judge llm)."),
    template: Path = typer.Option(None, "--template", help="LLM judge prompt template file ({prompt}, {response})."),
    backend: str = typer.Option("auto", "--backend", help="Backend that runs the judge model: auto, hf, vllm."),
    json_out: Path = typer.Option(None, "--json", help="Also write the full result (every disagreement) as JSON."),
    show: int = typer.Option(10, "--show", min=0, help="Disagreements to print."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Let the judge model run its own code."),
) -> None:
    """Measure a refusal judge against human labels: binary and 3-class agreement, Cohen's kappa, refusal
    precision and recall, confusion matrix, per-type agreement, worst disagreements.

    Example: harness judge check xstest_v2_completions_llama2orig.csv --json judge.json
    """
    from harness.backends.base import open_backend
    from harness.judge_check import check as run_check
    from harness.judge_check import render
    from suites.judges import judge_identity, make_judge

    spec = JudgeSpec(kind="llm" if judge_model else judge, model=str(judge_model) if judge_model else None,
                     template=str(template) if template else None)
    try:
        if spec.kind not in ("rules", "llm"):
            raise ValueError(f"--judge: {judge!r}; expected rules or llm")
        made = make_judge(spec, lambda path: open_backend(path, BackendSpec(name=backend), trust_remote_code))
        try:
            validity = run_check(file, made, judge_identity(spec))
        finally:
            made.close()
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(render(validity, show), soft_wrap=True)
    fallbacks = getattr(made, "fallbacks", 0)
    if fallbacks:
        console.print(f"  the judge model gave no clean label on {fallbacks} completions (rules used instead)")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in validity.to_dict().items()}
        json_out.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"  wrote {json_out}")
