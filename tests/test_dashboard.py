"""The Streamlit dashboard: every page rendered with AppTest on a store written through the
real Store API (numbers checked against the store), an empty / missing / in-progress /
malformed store rendering a message instead of a traceback, and the pure shaping functions.
Deep links and the allowed stores: test_dashboard_links.py; the server and a real browser:
test_dashboard_server.py."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboards.data import clean_samples, item_values, normalise_outcome, store_labels, store_paths_from
from dashboards.lineage import lineage_dot
from dashboards.shaping import flip_table, waterfall
from harness.compare import compare
from harness.compare_render import explanation, tables
from harness.core.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_fixtures import DEMO_STAGES, RUN_NAME, make_demo_store, write_synthetic_run  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"
PAGES = ("overview", "attribution", "compare", "topics", "reward_hacking", "samples")
TITLES = {"overview": "Overview", "attribution": "Attribution", "compare": "Compare methods",
          "topics": "Topics", "reward_hacking": "Reward hacking", "samples": "Samples"}
CRASH = "could not be drawn"


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("demo") / "results.sqlite"
    return path, make_demo_store(path)


def render(store: Path | str, page: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """One page of the app on `store`, asserting it drew without an exception."""
    monkeypatch.setenv("HARNESS_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [TITLES[page]]
    assert not [e.value for e in at.error if CRASH in e.value]
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def frame(at: AppTest, column: str, index: int = 0) -> pd.DataFrame:
    """The `index`-th table on the page that has `column`."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) > index, f"no table with column {column!r}"
    return found[index]


# -- every page on the demo run -------------------------------------------------------
def test_overview_shows_run_lineage_and_metrics(demo, monkeypatch) -> None:
    path, run_id = demo
    at = render(path, "overview", monkeypatch)
    with Store(path, readonly=True) as store:
        effects, cps, evals = store.effects(run_id), store.checkpoints(run_id), store.evaluations(run_id)
        metrics = store.metrics(run_id)
    assert texts(at, "header") == [f"Run: {RUN_NAME}"]
    shown = {m.label: m.value for m in at.metric}
    assert shown == {"Stages": str(len(cps)), "Complete": str(len(cps)), "Evaluations": str(len(evals)),
                     "Attributed effects": str(int(effects["attributed"].sum()))}
    dot = at.get("graphviz_chart")[0].proto.spec
    refusal = effects[(effects["stage"] == "dpo") & (effects["metric"] == "refusal.harmful_refusal_rate")].iloc[0]
    assert '"sft" -> "dpo"' in dot and f"refusal.harmful_refusal_rate {refusal['effect']:+.3f}" in dot
    assert '"reward" -> "ppo" [style=dashed' in dot
    table = frame(at, "topic_coverage.accuracy").set_index("stage")
    sft_acc = metrics[(metrics["stage"] == "sft") & (metrics["metric"] == "topic_coverage.accuracy")]["value"].iloc[0]
    assert table.loc["sft", "topic_coverage.accuracy"] == pytest.approx(round(sft_acc, 3))
    assert at.expander[-1].label == "World card"


def test_attribution_waterfall_and_effects_table(demo, monkeypatch) -> None:
    path, run_id = demo
    at = render(path, "attribution", monkeypatch)
    with Store(path, readonly=True) as store:
        effects = store.effects(run_id)
    metric = at.selectbox[0].value
    assert at.selectbox[1].value[-1] in {"ppo", "dpo"}  # a policy leaf by default
    steps = frame(at, "note")
    stored = effects[effects["metric"] == metric].set_index("stage")["effect"]
    for stage, effect in zip(steps["stage"].iloc[1:-1], steps["effect"].iloc[1:-1], strict=True):
        assert effect == pytest.approx(round(stored[stage], 3))
    heads = effects[effects["family"] == "headline"]
    assert len(frame(at, "expected_direction")) == len(heads)
    assert any(f"{len(heads)} effects" in c for c in texts(at, "caption"))


@pytest.fixture(scope="session")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The demo run at seeds 0 and 1 in one store, as `harness sweep --seeds 0,1` writes it."""
    path = tmp_path_factory.mktemp("seeds") / "results.sqlite"
    with Store(path) as store:
        return path, [write_synthetic_run(store, DEMO_STAGES, n_items=24, seed=seed) for seed in (0, 1)]


def test_compare_methods_over_seeds_is_harness_compare(two_seeds, monkeypatch) -> None:
    """The page shows what `harness compare` computes (the same function, the same rows) and every seed."""
    path, run_ids = two_seeds
    at = render(path, "compare", monkeypatch)
    assert at.multiselect[0].value == ["ppo", "dpo"]  # the siblings of sft
    with Store(path, readonly=True) as store:
        result = compare(store, ["ppo", "dpo"])
        values = {r: store.metrics(r).set_index(["stage", "metric"])["value"] for r in run_ids}
        items = {r: {s: store.samples(r, s, "refusal").set_index("item_id")["outcome"] for s in ("sft", "ppo")}
                 for r in run_ids}
    assert texts(at, "header") == ["ppo, dpo over seeds 0, 1"]
    assert any(explanation(result) in c for c in texts(at, "caption"))
    for title, headers, rows in tables(result):  # the CLI's three tables, cell for cell
        assert title in texts(at, "subheader")
        assert frame(at, headers[4]).values.tolist() == rows  # headers[4] names one table
    assert frame(at, "reward hacking flagged")["method"].tolist() == ["ppo", "dpo"]
    per_seed = frame(at, "parent value").set_index(["method", "metric", "seed"]).sort_index()
    key = "refusal.harmful_refusal_rate"
    for seed, run_id in enumerate(run_ids):  # each seed's value and paired effect, from that seed's run
        row = per_seed.loc[("ppo", key, seed)]
        assert row["run"] == run_id and row["parent"] == "sft"
        assert row["value"] == pytest.approx(round(values[run_id][("ppo", key)], 3))
        parent, child = items[run_id]["sft"], items[run_id]["ppo"]
        diffs = [child[i][key] - parent[i][key] for i in child.index if key in child[i] and key in parent.get(i, {})]
        assert row["effect"] == pytest.approx(round(float(np.mean(diffs)), 3)) and row["paired items"] == len(diffs)
    effect = next(e for e in result["effects"] if e["method"] == "ppo" and e["metric"] == key)
    assert effect["n_seeds"] == 2 and effect["pooled"]["n"] == per_seed.xs(("ppo", key))["paired items"].sum()
    assert effect["seed_ci"][0] is not None  # two seeds: a seed-level interval
    chart = at.get("vega_lite_chart")  # the selected metric, each seed a dot
    assert len(chart) == 1 and at.selectbox[0].value in chart[0].proto.spec
    at.multiselect[0].set_value(["dpo"]).run()  # one method: its effect, no pairs
    assert not at.exception and texts(at, "header") == ["dpo over seeds 0, 1"]
    assert frame(at, "pooled B − A [CI]").empty


def test_topics_accuracy_against_share(demo, monkeypatch) -> None:
    path, run_id = demo
    at = render(path, "topics", monkeypatch)
    table = frame(at, "share").set_index("topic")
    with Store(path, readonly=True) as store:
        metrics, card = store.metrics(run_id), store.get_run(run_id)["world_card"]
    top = card["topics"][0]
    acc = metrics[(metrics["stage"] == "pretrain") & (metrics["metric"] == f"topic_coverage.accuracy[{top['name']}]")]
    assert table.loc[top["name"], "share"] == pytest.approx(round(top["share_actual"], 3))
    assert table.loc[top["name"], "pretrain"] == pytest.approx(round(acc["value"].iloc[0], 3))
    assert list(table.columns) == ["share", "init", "pretrain", "sft", "ppo", "dpo"]
    assert [m.label for m in at.metric] == ["init", "pretrain", "sft", "ppo", "dpo"]


def test_reward_hacking_flags_ppo(demo, monkeypatch) -> None:
    path, run_id = demo
    at = render(path, "reward_hacking", monkeypatch)
    with Store(path, readonly=True) as store:
        rm = store.metrics(run_id, stage="reward").set_index("metric")["value"]
        effects = store.effects(run_id)
    flagged = [r["stage"] for r in effects.to_dict("records") if r["details"].get("reward_hacking", {}).get("flagged")]
    assert flagged == ["ppo"]
    assert [e.split(" flagged")[0] for e in texts(at, "error")] == ["**ppo**"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["reward: reward–length correlation"] == f"{rm['reward_model.reward_length_corr']:.2f}"
    assert shown["reward: held-out accuracy"] == f"{rm['reward_model.heldout_accuracy']:.2f}"
    by_stage = frame(at, "verbosity.mean_tokens").set_index("stage")
    assert by_stage.loc["ppo", "verbosity.mean_tokens"] > by_stage.loc["sft", "verbosity.mean_tokens"]


def test_samples_flips_side_by_side(demo, monkeypatch) -> None:
    path, run_id = demo
    at = render(path, "samples", monkeypatch)
    assert [s.value for s in at.selectbox[:3]] == ["refusal", "dpo", "refusal.harmful_refusal_rate"]
    with Store(path, readonly=True) as store:
        parent = store.samples(run_id, "sft", "refusal").set_index("item_id")["outcome"]
        child = store.samples(run_id, "dpo", "refusal").set_index("item_id")["outcome"]
    key = "refusal.harmful_refusal_rate"
    became = [i for i in child.index if key in child[i] and parent[i][key] == 0 and child[i][key] == 1]
    assert texts(at, "subheader") == [f"became refused at dpo: {len(became)} of {len(child)} items"]
    assert not texts(at, "code") and any("Content warning" in w for w in texts(at, "warning"))  # hidden at first
    at.toggle(key="samples.show_harmful").set_value(True).run()
    codes = texts(at, "code")
    assert codes and "I can't help with that." in codes[1]  # child side of the first pair refuses
    at.selectbox[3].select("lost").run()
    assert texts(at, "subheader")[0].startswith("no longer refused at dpo:")


# -- stores that are not a finished run -----------------------------------------------
def test_empty_and_missing_store_show_a_message(tmp_path, monkeypatch) -> None:
    Store(tmp_path / "empty.sqlite").close()
    for page in PAGES:
        at = render(tmp_path / "empty.sqlite", page, monkeypatch)
        assert any("has no runs yet" in i for i in texts(at, "info")), page
    at = render(tmp_path / "nowhere", "overview", monkeypatch)
    assert any("Cannot read the results store" in i and "nowhere" in i for i in texts(at, "info"))


def test_fresh_run_and_run_without_effects(tmp_path, monkeypatch) -> None:
    with Store(tmp_path / "fresh.sqlite") as store:
        store.create_run("just-started", {"stages": []})
    with Store(tmp_path / "no_effects.sqlite") as store:
        write_synthetic_run(store, DEMO_STAGES, n_items=8, effects=False)
    for page in PAGES:
        at = render(tmp_path / "fresh.sqlite", page, monkeypatch)
        assert any("still in progress" in i for i in texts(at, "info")) and len(texts(at, "info")) >= 2, page
    for page in ("overview", "attribution", "reward_hacking"):
        at = render(tmp_path / "no_effects.sqlite", page, monkeypatch)
        assert any("No stage effects" in i for i in texts(at, "info")), page


def test_run_in_progress_and_failed_stage(tmp_path, monkeypatch) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        run_id = write_synthetic_run(store, DEMO_STAGES[:5], n_items=12, finish=False)
        store.upsert_checkpoint(run_id, "ppo", "ppo", "sft", None, None, "failed")
        store.upsert_checkpoint(run_id, "dpo", "dpo", "sft", None, None, "started")
    for page in PAGES:
        at = render(path, page, monkeypatch)
        assert any("still in progress (stage in progress: dpo)" in i for i in texts(at, "info")), page
        assert any("Failed stage(s): ppo" in w for w in texts(at, "warning")), page


def test_malformed_rows_render_with_a_warning(tmp_path, monkeypatch) -> None:
    path = tmp_path / "results.sqlite"
    run_id = make_demo_store(path)
    con = sqlite3.connect(path, isolation_level=None)
    key = con.execute("SELECT eval_key FROM evaluations WHERE suite = 'refusal' LIMIT 1").fetchone()[0]

    def write(*sql: str, params: tuple = ()) -> None:  # as a writer would: bump the change token
        for statement in sql:
            con.execute(statement, params if "?" in statement else ())
        con.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'write_count'")

    write("INSERT INTO metrics(eval_key, metric, value) VALUES (?, 'refusal.broken', NULL)", params=(key,))
    write("UPDATE samples SET outcome_json = '[1, 2]' WHERE rowid IN (SELECT rowid FROM samples LIMIT 50)",
          """UPDATE samples SET outcome_json = '{"verbosity.mean_tokens": "lots"}'
             WHERE rowid IN (SELECT rowid FROM samples ORDER BY rowid DESC LIMIT 5)""",
          "UPDATE checkpoints SET metrics_json = 'null', inputs_json = '\"x\"' WHERE stage = 'reward'",
          """UPDATE runs SET world_card_json = '{"topics": "none"}'""")
    write("INSERT INTO effects(run_id, stage, metric) VALUES (?, 'dpo', 'refusal.broken')", params=(run_id,))
    write("""INSERT INTO checkpoints(run_id, stage, kind, parent_stage, status, created_at, updated_at)
             VALUES (?, 'orphan', 'sft', 'ghost', 'complete', 'z', 'z')""", params=(run_id,))
    for page in PAGES:
        at = render(path, page, monkeypatch)
        if page == "overview":
            assert any("1 metric row(s) without a name or a value" in w for w in texts(at, "warning"))
    write("INSERT INTO metrics(eval_key, metric, value) VALUES (?, 'refusal.text', 'abc')", params=(key,))
    write("UPDATE samples SET outcome_json = 'not json' WHERE rowid IN (SELECT rowid FROM samples LIMIT 1)")
    for page in PAGES:  # the store reads a text value in a number column as missing (NaN), never a crash
        at = render(path, page, monkeypatch)
        if page == "overview":
            assert any("2 metric row(s) without a name or a value" in w for w in texts(at, "warning"))
    con.close()


# -- pure shaping ---------------------------------------------------------------------
def test_store_path_and_outcome_normalisation() -> None:
    assert store_paths_from(["--store", "a.sqlite", "--store=b", "--store", "a.sqlite"], {}) == ["a.sqlite", "b"]
    assert store_paths_from(["--store=b"], {"HARNESS_STORE": "c"}) == ["b"]
    assert store_paths_from(["-x"], {"HARNESS_STORE": f"c{os.pathsep}d"}) == ["c", "d"]
    assert store_paths_from([], {}) == []
    assert store_labels(["/r/default/results.sqlite", "/s/default/results.sqlite", "/t/x.sqlite"]) == {
        "default": "/r/default/results.sqlite", "default (2)": "/s/default/results.sqlite", "x.sqlite": "/t/x.sqlite"}
    out = normalise_outcome({"mean_tokens": 3, "refused": True, "accuracy[x]": 1.0}, "verbosity",
                            {"verbosity.accuracy[x]"})
    assert out == {"verbosity.mean_tokens": 3, "refused": True, "verbosity.accuracy[x]": 1.0}
    assert normalise_outcome([1, 2], "verbosity") == {}


def test_lineage_dot() -> None:
    cps = pd.DataFrame({"stage": [s for s, _, _ in DEMO_STAGES], "kind": [k for _, k, _ in DEMO_STAGES],
                        "parent_stage": [p for _, _, p in DEMO_STAGES], "status": "complete",
                        "inputs": [{"reward": "reward"} if s == "ppo" else {} for s, _, _ in DEMO_STAGES],
                        "metrics": [{"gate": "fail"} if s == "dpo" else {} for s, _, _ in DEMO_STAGES]})
    effects = pd.DataFrame({"stage": ["dpo"], "metric": ["refusal.harmful_refusal_rate"], "effect": [0.5],
                            "attributed": [True], "family": ["headline"], "p_adjusted": [1e-6]})
    dot = lineage_dot(cps, effects)
    assert '"sft" -> "dpo" [label="refusal.harmful_refusal_rate +0.500\\ngate: fail"];' in dot


def test_waterfall_telescopes_to_the_leaf(demo) -> None:
    path, run_id = demo
    with Store(path, readonly=True) as store:
        from dashboards.data import clean_effects, clean_metrics
        metrics, effects = clean_metrics(store.metrics(run_id)), clean_effects(store.effects(run_id))
    wf = waterfall(["init", "pretrain", "sft", "ppo"], "topic_coverage.accuracy", metrics, effects)
    assert list(wf["kind"]) == ["start", "effect", "effect", "effect", "measured"]
    assert wf["top"].iloc[-2] == pytest.approx(wf["top"].iloc[-1])  # start + effects = leaf value


def test_flip_table_counts() -> None:
    def frame(values: list[float]) -> pd.DataFrame:
        return clean_samples(pd.DataFrame({
            "suite": "refusal", "stage": "x", "item_id": [f"i{k}" for k in range(len(values))], "sample_index": 0,
            "prompt": "p", "response": "r", "outcome": [{"refusal.harmful_refusal_rate": v} for v in values]}))
    table, binary = flip_table(frame([0, 0, 1, 1]), frame([1, 0, 0, 1]), "refusal.harmful_refusal_rate")
    assert binary and list(table["change"]) == ["gained", "unchanged", "lost", "unchanged"]
    assert len(item_values(frame([0, 1]))) == 2


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_a_real_pipeline_run(smoke_run, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same pages on the store of a real `harness run smoke` (tiny models, every stage and suite)."""
    cfg, result = smoke_run
    at = render(Path(cfg.output_dir) / "results.sqlite", page, monkeypatch)
    shown = " ".join(texts(at, "markdown") + texts(at, "header") + texts(at, "subheader") + texts(at, "caption"))
    if page == "overview":
        assert "smoke" in shown and result.run_id in shown


def test_overview_shows_the_judges_measured_validity(tmp_path, monkeypatch) -> None:
    path = tmp_path / "results.sqlite"
    run_id = make_demo_store(path)
    with Store(path) as store:
        store.record_judge_validity(run_id, "refusal", {"kind": "rules"}, {
            "file": "/data/xstest_labels.csv", "sha256": "ab", "n": 450, "agreement": 0.964, "kappa": 0.899,
            "agreement_3class": 0.858, "kappa_3class": 0.69, "precision": 0.98, "recall": 0.974})
    at = render(path, "overview", monkeypatch)
    assert any("Judge of **refusal** checked against human labels (xstest_labels.csv, n=450): agreement 0.964, "
               "Cohen's kappa 0.899" in c for c in texts(at, "caption"))
