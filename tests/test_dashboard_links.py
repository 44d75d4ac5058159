"""Deep links and the stores a dashboard may open: query parameters select run, page, metric
and stage (and the dashboard writes them back), the newest complete run is the default, a
store the dashboard was not started with is refused without looking at the disk, harmful
requests sit behind a content warning, and `harness report` / `harness gate --dashboard-url`
print links that open those exact views (AppTest here; a real browser in test_dashboard_server)."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from dashboards.data import default_run, is_harmful
from harness.cli import app as cli
from harness.core.store import Store
from harness.dashboard_links import PAGES, flagged_stages, report_links, view_url
from harness.gate import run_gate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_fixtures import DEMO_STAGES, RUN_NAME, make_demo_store, write_synthetic_run  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"
TITLES = {"overview": "Overview", "attribution": "Attribution", "compare": "Compare methods",
          "topics": "Topics", "reward_hacking": "Reward hacking", "samples": "Samples"}
REFUSED = "does not serve"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store with the demo run (complete), then a newer run still in progress."""
    path = tmp_path_factory.mktemp("links") / "results.sqlite"
    done = make_demo_store(path)
    with Store(path) as store:
        running = write_synthetic_run(store, DEMO_STAGES[:3], n_items=8, name="in-progress", finish=False,
                                      effects=False)
    return path, done, running


def open_app(stores: list[Path], monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    """The app started with `stores`, opened at the URL ``?params``; asserts it drew without an exception."""
    monkeypatch.setenv("HARNESS_STORE", os.pathsep.join(map(str, stores)))
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def shown_run(at: AppTest) -> str:
    return texts(at, "header")[0] if at.header else ""


def params_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def test_the_newest_complete_run_is_the_default(two_runs, monkeypatch) -> None:
    path, done, running = two_runs
    with Store(path, readonly=True) as store:
        runs = store.runs().iloc[::-1]
    assert list(runs["run_id"])[:2] == [running, done] and default_run(runs.reset_index(drop=True)) == done
    at = open_app([path], monkeypatch)
    assert shown_run(at) == f"Run: {RUN_NAME}" and at.query_params["run"] == done
    assert not any("still in progress" in i for i in texts(at, "info"))
    at = open_app([path], monkeypatch, run=running)  # the run in progress, when the link names it
    assert shown_run(at) == "Run: in-progress" and any("still in progress" in i for i in texts(at, "info"))


def test_query_params_select_run_page_metric_and_stage(two_runs, monkeypatch) -> None:
    path, done, _ = two_runs
    at = open_app([path], monkeypatch, run=done, page="attribution", metric="verbosity.mean_tokens", stage="dpo")
    assert texts(at, "title") == ["Attribution"]
    assert at.selectbox(key="attribution.metric").value == "verbosity.mean_tokens"
    assert at.selectbox(key="attribution.path").value[-1] == "dpo"
    assert any("`verbosity.mean_tokens` starts at" in c for c in texts(at, "caption"))
    at.selectbox(key="attribution.metric").select("refusal.harmful_refusal_rate").run()  # state -> URL
    assert dict(at.query_params) == {
        "run": done, "page": "attribution", "metric": "refusal.harmful_refusal_rate", "stage": "dpo"}
    # a stage inside a lineage path picks the path through it and stays in the URL
    at = open_app([path], monkeypatch, page="attribution", metric="topic_coverage.accuracy", stage="pretrain")
    assert "pretrain" in at.selectbox(key="attribution.path").value and at.query_params["stage"] == "pretrain"
    # a breakdown metric opens with breakdowns shown
    at = open_app([path], monkeypatch, page="attribution", metric="refusal.harmful_refusal_rate[weapons]")
    assert at.toggle(key="attribution.breakdowns").value
    assert at.selectbox(key="attribution.metric").value == "refusal.harmful_refusal_rate[weapons]"
    at = open_app([path], monkeypatch, page="samples", metric="refusal.over_refusal_rate", stage="ppo")
    assert [at.selectbox(key=k).value for k in ("samples.suite", "samples.stage", "samples.metric")] == [
        "refusal", "ppo", "refusal.over_refusal_rate"]
    at = open_app([path], monkeypatch, page="reward_hacking", stage="ppo")
    assert any(m.startswith("Linked stage **ppo**: flagged for reward hacking") for m in texts(at, "markdown"))
    at = open_app([path], monkeypatch, page="no-such-page", metric="no.such_metric")  # nonsense: the defaults
    assert texts(at, "title") == ["Overview"] and at.query_params["page"] == "overview"


def test_refuses_a_store_it_was_not_started_with(two_runs, tmp_path, monkeypatch) -> None:
    """No widget takes a path; a link naming another store (one that exists, one that does not)
    or another store's run gets the same answer and the allowed store, and nothing else is opened."""
    path, done, _ = two_runs
    other = tmp_path / "other" / "results.sqlite"
    other.parent.mkdir()
    with Store(other) as store:
        secret = write_synthetic_run(store, DEMO_STAGES[:3], n_items=4, name="secret")
    answers = []
    for wanted in (str(other), str(other.parent), str(tmp_path / "missing.sqlite"), "/etc/passwd"):
        at = open_app([path], monkeypatch, store=wanted)
        assert not at.text_input and shown_run(at) == f"Run: {RUN_NAME}", wanted
        answers.append([w for w in texts(at, "warning") if REFUSED in w])
        assert "store" not in at.query_params
    assert answers[0] and all(a == answers[0] for a in answers) and wanted not in answers[0][0]
    at = open_app([path], monkeypatch, run=secret)
    assert shown_run(at) == f"Run: {RUN_NAME}" and any(f"not in `{path.parent.name}`" in w for w in texts(at, "warning"))
    assert "secret" not in " ".join(texts(at, "markdown") + texts(at, "caption") + texts(at, "header"))


def test_several_stores_are_a_selectbox_and_a_link_finds_its_run(two_runs, tmp_path, monkeypatch) -> None:
    path, _, _ = two_runs
    other = tmp_path / "second" / "results.sqlite"
    other.parent.mkdir()
    with Store(other) as store:
        theirs = write_synthetic_run(store, DEMO_STAGES[:3], n_items=4, name="second-run")
    at = open_app([path, other], monkeypatch)
    box = at.sidebar.selectbox(key="store_label")
    assert box.options == [path.parent.name, "second"] and box.value == path.parent.name
    at = open_app([path, other], monkeypatch, run=theirs)
    assert at.sidebar.selectbox(key="store_label").value == "second" and shown_run(at) == "Run: second-run"
    at = open_app([path, other], monkeypatch, store="second")
    assert shown_run(at) == "Run: second-run" and at.query_params["store"] == "second"


def test_harmful_requests_sit_behind_a_content_warning(two_runs, monkeypatch) -> None:
    path, _, _ = two_runs
    at = open_app([path], monkeypatch, page="samples", metric="refusal.harmful_refusal_rate", stage="dpo")
    assert any("Content warning" in w for w in texts(at, "warning"))
    assert not texts(at, "code") and not texts(at, "text")  # no prompt, no response
    assert any("harmful request hidden" in c for c in texts(at, "caption"))
    table = at.dataframe[0].value
    assert set(table["prompt"]) == {"(hidden: harmful request)"}
    at.toggle(key="samples.show_harmful").set_value(True).run()
    assert any("How do I make a" in t for t in texts(at, "text")) and texts(at, "code")
    benign = open_app([path], monkeypatch, page="samples", metric="refusal.over_refusal_rate", stage="dpo")
    assert not any("Content warning" in w for w in texts(benign, "warning")) and texts(benign, "text")
    assert is_harmful({"refusal.harmful_refusal_rate": 1.0}) and not is_harmful({"refusal.over_refusal_rate": 0})


def test_view_urls() -> None:
    url = view_url("http://h:8501/", "r1", "attribution", "refusal.harmful_refusal_rate[weapons]", "dpo")
    assert url.startswith("http://h:8501/?") and params_of(url) == {
        "run": "r1", "page": "attribution", "metric": "refusal.harmful_refusal_rate[weapons]", "stage": "dpo"}
    assert view_url("http://h", "r1") == "http://h/?run=r1&page=overview"
    with pytest.raises(ValueError, match="unknown dashboard page"):
        view_url("http://h", "r1", "nope")
    assert PAGES == tuple(TITLES)


def test_report_links_open_their_exact_views(two_runs, tmp_path, monkeypatch) -> None:
    """`harness report --dashboard-url` prints (and writes to --markdown) one link per attributed
    effect and flagged stage; each opens the page, run, metric and stage it names."""
    path, done, _ = two_runs
    md = tmp_path / "report.md"
    result = CliRunner().invoke(cli, ["report", "--store", str(path), "--run", done, "--markdown", str(md),
                                      "--dashboard-url", "http://127.0.0.1:8501"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    printed = re.findall(r"^- \[(.+?)\]\((http://127\.0\.0\.1:8501/\?\S+)\)$", result.output, re.M)
    with Store(path, readonly=True) as store:
        effects = store.effects(done)
    assert printed == report_links("http://127.0.0.1:8501", done, effects) and "## Dashboard views" in md.read_text()
    attributed = effects[effects["attributed"] & (effects["family"] == "headline")]
    assert len(printed) == 1 + 2 * len(attributed) + 1 and flagged_stages(effects) == ["ppo"]
    for label, url in printed:
        p = params_of(url)
        at = open_app([path], monkeypatch, **p)
        assert texts(at, "title") == [TITLES[p["page"]]] and at.query_params["run"] == done, label
        if p["page"] == "attribution":
            assert at.selectbox(key="attribution.metric").value == p["metric"]
            assert p["stage"] in at.selectbox(key="attribution.path").value
        elif p["page"] == "samples":
            assert (at.selectbox(key="samples.metric").value, at.selectbox(key="samples.stage").value) == (
                p["metric"], p["stage"])
        elif p["page"] == "reward_hacking":
            assert any(m.startswith(f"Linked stage **{p['stage']}**: flagged") for m in texts(at, "markdown"))


def test_gate_summary_links_each_rule(two_runs, tmp_path) -> None:
    path, done, _ = two_runs
    rules = tmp_path / "rules.yaml"
    rules.write_text("mode: strict\non_missing: warn\nrules:\n  - metric: refusal.over_refusal_rate\n"
                     "    max_increase: 0.5\n", encoding="utf-8")
    out, summary = io.StringIO(), tmp_path / "gate.md"
    run_gate(path, done, "ppo", "sft", rules, summary=summary, out=out, err=io.StringIO(),
             dashboard_url="http://ci.example:8501")
    links = dict(re.findall(r"^- \[(.+?)\]\((\S+)\)$", out.getvalue(), re.M))
    assert out.getvalue() == summary.read_text()
    assert params_of(links["ppo: refusal.over_refusal_rate (pass, attribution)"]) == {
        "run": done, "page": "attribution", "metric": "refusal.over_refusal_rate", "stage": "ppo"}
    assert params_of(links["ppo: flagged for reward hacking"])["page"] == "reward_hacking"
