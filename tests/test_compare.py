"""`harness compare` statistics on small synthetic stores written through the real Store API: per-seed
and pooled paired effects against the shared parent, pairs of methods, seed-level intervals, one Holm
family over the table, variants labelled by what differs, and the CLI's three outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from harness.cli import app
from harness.compare import CompareError, compare
from harness.compare_methods import find_methods, method_groups, variant_key
from harness.compare_render import render_markdown
from harness.core import paired as pt
from harness.core.store import Store

N = 40
REFUSAL, TOKENS = "refusal.harmful_refusal_rate", "verbosity.mean_tokens"


def outcomes(stage: str, seed: int, beta: float) -> dict[str, list[float]]:
    """Planted: ppo refuses 30 of 40 more and adds 5 tokens (6 at seed 1); dpo (beta 0.1) is sft plus noise
    (2 flips, ±1 token); dpo at beta 0.2 adds 3 tokens."""
    base_tokens = [10.0 + k % 5 for k in range(N)]
    if stage == "sft":
        return {REFUSAL: [0.0] * N, TOKENS: base_tokens}
    if stage == "ppo":
        return {REFUSAL: [1.0 if k < 30 else 0.0 for k in range(N)], TOKENS: [t + 5 + seed for t in base_tokens]}
    shift = 3.0 if beta == 0.2 else 0.0
    return {REFUSAL: [1.0 if k in (3, 7) else 0.0 for k in range(N)],
            TOKENS: [t + shift + (1 if k % 2 else -1) for k, t in enumerate(base_tokens)]}


def write_run(store: Store, seed: int, beta: float = 0.1, backend: str = "hf", values=outcomes) -> str:
    """A complete run of sft -> {ppo, dpo}: per stage, each metric of ``values`` evaluated in its own suite."""
    stages = [{"name": "sft", "kind": "sft", "from": "init"}, {"name": "ppo", "kind": "ppo", "from": "sft"},
              {"name": "dpo", "kind": "dpo", "from": "sft", "beta": beta}]
    config = {"name": "syn", "seed": seed, "output_dir": "/x", "stages": stages, "suites": ["refusal", "verbosity"],
              "backend": {"name": backend}}
    run_id = store.create_run("syn", config, {"expected_effects": []})
    for spec in stages:
        stage, parent = spec["name"], None if spec["from"] == "init" else spec["from"]
        store.upsert_checkpoint(run_id, stage, spec["kind"], parent, f"h{seed}{stage}{beta}", "/ckpt", "complete",
                                {"wall_s": 2.0 + seed, "train_tokens": 100}, {"parent": parent} if parent else {})
        for metric, vals in values(stage, seed, beta).items():
            suite = metric.split(".")[0]
            key = f"{run_id}:{stage}:{suite}"
            store.begin_evaluation(key, run_id, stage, suite, "1", "items", backend, {"temperature": 0.0}, None)
            samples = [{"item_id": f"i{k}", "item_hash": f"h{k}", "sample_index": 0, "prompt": "p", "response": "r",
                        "outcome": {metric: v}} for k, v in enumerate(vals)]
            store.write_evaluation(key, [{"metric": metric, "value": float(np.mean(vals)), "n": len(vals),
                                          "higher_is_better": False}], samples)
    store.finish_run(run_id, "complete")
    return run_id


@pytest.fixture
def two_seeds(tmp_path: Path) -> Path:
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        for seed in (0, 1):
            write_run(store, seed)
    return path


def by(rows: list[dict], **keys) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in keys.items()))


def test_effects_against_the_shared_parent_per_seed_and_pooled(two_seeds: Path) -> None:
    with Store(two_seeds, readonly=True) as store:
        result = compare(store, ["ppo", "dpo"], alpha=0.05)
    assert result["seeds"] == [0, 1] and result["metrics"] == [REFUSAL, TOKENS]
    ppo = by(result["effects"], method="ppo", metric=REFUSAL)
    assert ppo["parents"] == ["sft"] and ppo["n_seeds"] == 2
    assert [e["diff"] for e in ppo["per_seed"]] == [0.75, 0.75]
    pooled = ppo["pooled"]
    assert pooled["n"] == 2 * N and pooled["test"] == "mcnemar" and pooled["diff"] == pytest.approx(0.75)
    assert pooled["p_value"] == pytest.approx(sps.binomtest(60, 60, 0.5).pvalue)  # 60 gains, no losses, 2 seeds
    assert ppo["verdict"] == "raises"
    tokens = by(result["effects"], method="ppo", metric=TOKENS)
    assert [e["diff"] for e in tokens["per_seed"]] == [5.0, 6.0] and tokens["pooled"]["diff"] == pytest.approx(5.5)
    means = [e["value"] for e in tokens["per_seed"]]
    half = sps.t.ppf(0.975, 1) * np.std(means, ddof=1) / math.sqrt(2)
    assert tokens["mean"] == pytest.approx(np.mean(means))
    assert tokens["seed_ci"] == pytest.approx([np.mean(means) - half, np.mean(means) + half])
    dpo = by(result["effects"], method="dpo", metric=REFUSAL)
    assert dpo["pooled"]["diff"] == pytest.approx(0.05) and dpo["verdict"] == "no clear effect"


def test_pairs_and_one_holm_family_over_the_table(two_seeds: Path) -> None:
    with Store(two_seeds, readonly=True) as store:
        result = compare(store, ["ppo", "dpo"], alpha=0.05)
    pair = by(result["pairs"], a="ppo", b="dpo", metric=REFUSAL)
    assert [e["diff"] for e in pair["per_seed"]] == [pytest.approx(-0.7), pytest.approx(-0.7)]
    assert pair["pooled"]["n"] == 2 * N and pair["verdict"] == "ppo higher"
    family = result["effects"] + result["pairs"]
    assert result["family_size"] == len(family) == 2 * 2 + 1 * 2  # (methods + pairs) x metrics
    assert result["ci_level"] == pytest.approx(1 - 0.05 / 6)
    adjusted = pt.holm([j["pooled"]["p_value"] for j in family])
    assert [j["pooled"]["p_adjusted"] for j in family] == pytest.approx(adjusted)
    assert all(j["pooled"]["p_adjusted"] >= j["pooled"]["p_value"] for j in family)
    # the pooled interval is at the family's level: wider than the per-seed 95% one of the same data
    seed0 = pair["per_seed"][0]["ci"]
    assert pair["pooled"]["ci"][1] - pair["pooled"]["ci"][0] > 0 and seed0[1] - seed0[0] > 0


def test_no_difference_is_called_without_holm_over_the_table(tmp_path: Path) -> None:
    """Thirty metrics; at one, dpo gains 8 of 60 items and loses none (exact McNemar p = 2/2^8 < α = 0.05,
    its unadjusted 95% interval excludes 0), not significant after Holm over the table: no verdict for it.
    At another every item gains: called after Holm too. (The dashboard's Compare page shows these verdicts.)"""
    def thirty(stage: str, seed: int, beta: float) -> dict[str, list[float]]:
        rng = np.random.default_rng(7)
        out = {}
        for j in range(30):
            base = (rng.random(60) < 0.5).astype(float)
            child = base.copy()
            if stage == "dpo" and j == 0:
                child[np.flatnonzero(base == 0)[:8]] = 1.0
            elif stage == "dpo" and j == 1:
                child[:] = 1.0
            out[f"s{j:02d}.rate"] = list(child)
        return out

    with Store(tmp_path / "results.sqlite") as store:
        write_run(store, 0, values=thirty)
        assert method_groups(store) == {"sft": ["ppo", "dpo"]}  # what the Compare page offers
        result = compare(store, ["ppo", "dpo"], metrics=["all"], alpha=0.05)
    weak, strong = (by(result["pairs"], a="ppo", b="dpo", metric=m) for m in ("s00.rate", "s01.rate"))
    assert weak["pooled"]["p_value"] == pytest.approx(2 / 2**8) and weak["pooled"]["p_adjusted"] > 0.05
    assert sps.binomtest(8, 8).pvalue < 0.05 and weak["per_seed"][0]["ci"][0] > 0  # unadjusted: excludes 0
    assert weak["verdict"] == "no clear difference" and weak["pooled"]["ci"][0] < 0  # simultaneous: does not
    assert strong["verdict"] == "dpo higher" and strong["pooled"]["p_adjusted"] < 0.05
    assert result["family_size"] == 3 * 30 and {p["verdict"] for p in result["pairs"]} == {
        "no clear difference", "dpo higher"}


def test_variants_are_labelled_by_what_differs_and_pair_within_seeds(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        for seed in (0, 1):
            for beta in (0.1, 0.2):
                write_run(store, seed, beta)
    with Store(path, readonly=True) as store:
        labels = [m.label for m in find_methods(store, ["ppo", "dpo"])]
        assert labels == ["ppo", "dpo[dpo.beta=0.1]", "dpo[dpo.beta=0.2]"]  # ppo does not depend on dpo's beta
        result = compare(store, ["dpo[dpo.beta=0.1]", "dpo[dpo.beta=0.2]"], metrics=[TOKENS], alpha=0.05)
    pair = result["pairs"][0]
    assert (pair["a"], pair["b"]) == ("dpo[dpo.beta=0.1]", "dpo[dpo.beta=0.2]")
    assert [e["diff"] for e in pair["per_seed"]] == [3.0, 3.0] and pair["verdict"] == "dpo[dpo.beta=0.2] higher"
    assert [m["seeds"] for m in result["methods"]] == [[0, 1], [0, 1]]


def test_not_comparable_evaluations_and_unknown_methods(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        write_run(store, 0, backend="hf")
        write_run(store, 0, beta=0.2, backend="vllm")  # another backend: never compared with hf's numbers
    with Store(path, readonly=True) as store:
        result = compare(store, ["dpo"], metrics=[TOKENS], alpha=0.05)
        pair = result["pairs"][0]
        assert pair["verdict"] == "not comparable" and "backend" in pair["per_seed"][0]["note"]
        with pytest.raises(CompareError, match="no complete run .* stage 'rloo' .*stages: dpo, ppo, sft"):
            compare(store, ["rloo"])
        with pytest.raises(CompareError, match="no variant"):
            compare(store, ["dpo[dpo.beta=9]"])


def test_variant_key_keeps_the_stage_and_its_ancestors_only() -> None:
    config = {"seed": 3, "name": "x", "output_dir": "/o", "model": {"fresh": {}},
              "stages": [{"name": "sft", "from": "init"}, {"name": "reward", "from": "sft"},
                         {"name": "ppo", "from": "sft", "reward": "reward"}, {"name": "dpo", "from": "sft", "beta": 1}]}
    key = variant_key(config, "ppo")
    assert set(key["stages"]) == {"sft", "reward", "ppo"} and "seed" not in key and key["model"] == {"fresh": {}}


def test_cli_prints_the_tables_and_writes_markdown_and_json(two_seeds: Path, tmp_path: Path) -> None:
    md, js = tmp_path / "c.md", tmp_path / "c.json"
    out = CliRunner().invoke(app, ["compare", "--store", str(two_seeds), "--methods", "ppo,dpo",
                                   "--markdown", str(md), "--json", str(js)], terminal_width=250)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "Pairs of methods" in text and "Per method" in text and "Holm over the 6 pooled tests" in text
    result = json.loads(js.read_text())
    assert result["alpha"] == 0.01  # the runs' attribution.alpha (the default spec) when --alpha is not given
    assert md.read_text() == render_markdown(result)
    assert "| refusal.harmful_refusal_rate | ppo | sft | 2 |" in md.read_text()
    bad = CliRunner().invoke(app, ["compare", "--store", str(two_seeds), "--methods", "kto"])
    assert bad.exit_code == 2 and "stage 'kto'" in bad.output


def test_a_config_change_that_changes_no_result_is_one_variant(tmp_path: Path) -> None:
    """A rerun whose config gained a field (same checkpoints, same evaluations) is the same variant, latest run."""
    with Store(tmp_path / "results.sqlite") as store:
        first = write_run(store, 0)
        config = store.get_run(first)["config"]
        again = store.create_run("syn", {**config, "backend": {**config["backend"], "threads": None}},
                                 {"expected_effects": []})
        for rec in store.checkpoints(first).to_dict("records"):
            store.upsert_checkpoint(again, rec["stage"], rec["kind"], rec["parent_stage"], rec["content_hash"],
                                    rec["path"], "complete", rec["metrics"], rec["inputs"])
        for rec in store.evaluations(first).to_dict("records"):
            store.link_evaluation(rec["eval_key"], again, rec["stage"])
        store.finish_run(again, "complete")
        (dpo,) = find_methods(store, ["dpo"])
        assert dpo.label == "dpo" and dpo.runs == {0: again}
        write_run(store, 0, beta=0.2)  # other results: another variant, labelled by what differs
        labels = [m.label for m in find_methods(store, ["dpo"])]
    assert labels == ["dpo[dpo.beta=0.1]", "dpo[dpo.beta=0.2]"]  # an absent key reads as null: no difference
