"""Config validation: every bad config fails before anything runs, naming file, key path and expectation."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError, load_config, packaged_configs, topological_order

GOOD = {
    "name": "t",
    "output_dir": "/tmp/harness-test-config",
    "world": {"preset": "smoke"},
    "stages": [
        {"name": "pretrain", "kind": "pretrain"},
        {"name": "sft", "kind": "sft", "from": "pretrain"},
        {"name": "reward", "kind": "reward", "from": "sft"},
        {"name": "ppo", "kind": "ppo", "from": "sft", "reward": "reward"},
        {"name": "dpo", "kind": "dpo", "from": "sft"},
    ],
    "suites": [{"name": "refusal"}, {"name": "hallucination"}],
}


def write(tmp_path: Path, data: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def mutate(fn) -> dict:
    cfg = copy.deepcopy(GOOD)
    fn(cfg)
    return cfg


def test_good_config_validates(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert [s.name for s in topological_order(cfg)] == ["pretrain", "sft", "reward", "ppo", "dpo"]
    assert cfg.stage("dpo").from_ == "sft"


BAD = [
    ("unknown top-level key", lambda c: c.update(stagez=[]), "stagez: unknown key"),
    ("unknown nested key", lambda c: c.update(model={"fresh": {"hiden_size": 64}}), "model.fresh.hiden_size: unknown key"),
    ("wrong type", lambda c: c.update(seed="abc"), "seed: Input should be a valid integer"),
    ("missing required", lambda c: c.pop("output_dir"), "output_dir: required field is missing"),
    ("unknown stage kind", lambda c: c["stages"][1].update(kind="sfft"), "stages[1].kind: unknown stage kind 'sfft'; did you mean 'sft'?"),
    ("unknown parent", lambda c: c["stages"][1].update({"from": "pretrian"}), "stages[1].from: unknown parent 'pretrian'"),
    (
        "cycle",
        lambda c: (c["stages"][0].update({"from": "sft"})),
        "stages[0].from: cycle in the stage graph: pretrain -> sft -> pretrain",
    ),
    ("RL stage without reward", lambda c: c["stages"][3].pop("reward"), "stages[3].reward: stage kind 'ppo' needs `reward:"),
    ("reward names a non-reward stage", lambda c: c["stages"][3].update(reward="sft"), "stages[3].reward: 'sft' is a 'sft' stage"),
    ("duplicate stage name", lambda c: c["stages"][4].update(name="ppo"), "stages[4].name: duplicate stage name 'ppo'"),
    ("unknown suite", lambda c: c["suites"][0].update(name="refusl"), "suites[0].name: unknown suite 'refusl'; did you mean 'refusal'?"),
    ("unknown stage option", lambda c: c["stages"][4].update(betta=0.1), "stages[4].betta: unknown key"),
    ("bad stage option type", lambda c: c["stages"][4].update(beta="high"), "stages[4].beta:"),
    ("head_dim too small", lambda c: c.update(model={"fresh": {"hidden_size": 64, "num_heads": 4}}), "model.fresh: Value error, head_dim"),
    ("reserved stage name", lambda c: c["stages"][0].update(name="init"), "stages[0].name: 'init' is reserved"),
    ("unknown world knob", lambda c: c["world"].update(annotator_lenght_bias=0.5), "world.annotator_lenght_bias"),
    ("unknown backend", lambda c: c.update(backend={"name": "vlm"}), "backend.name: unknown backend 'vlm'"),
]


@pytest.mark.parametrize("label,change,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_key_path(tmp_path: Path, label: str, change, expected: str) -> None:
    path = write(tmp_path, mutate(change))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, message
    assert expected in message, message


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nstages: [\n  {name: a\n")
    with pytest.raises(ConfigError, match=r"malformed YAML \(line \d+, column \d+\)") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(path)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_file_and_unknown_packaged_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a packaged config"):
        load_config("no-such-preset")


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    cfg = load_config(path, ["stages.dpo.beta=0.25", "seed=3", "backend.decoding.max_new_tokens=12", "stages.1.num_train_epochs=2"])
    assert cfg.seed == 3
    assert cfg.stage("dpo").options()["beta"] == 0.25
    assert cfg.stage("sft").options()["num_train_epochs"] == 2
    assert cfg.backend.decoding.max_new_tokens == 12


@pytest.mark.parametrize(
    "override,expected",
    [
        ("stagez.x=1", "override 'stagez.x=1': unknown top-level key 'stagez'"),
        ("stages.nosuch.beta=1", "override 'stages.nosuch.beta=1': stages.nosuch: no item named 'nosuch'"),
        ("backend.decodng.top_p=0.5", "backend.decodng: unknown key"),
        ("seed", "expected KEY=VALUE"),
        ("name.x=1", "name is a value, not a mapping"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD), [override])
    assert expected in str(info.value)


def test_several_errors_reported_together(tmp_path: Path) -> None:
    bad = mutate(lambda c: (c["stages"][1].update(kind="sfft"), c["suites"][0].update(name="refusl")))
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad))
    assert "2 errors" in str(info.value)


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_packaged_configs_validate(name: str) -> None:
    assert name in packaged_configs()
    cfg = load_config(name)
    kinds = {s.name: s.kind for s in cfg.stages}
    assert all(stage == kind for stage, kind in kinds.items()), "packaged configs name stages after their kind"


def test_cli_validate_rejects_stagez(tmp_path: Path) -> None:
    path = write(tmp_path, mutate(lambda c: c.update(stagez=[])))
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "config", "validate", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "stagez: unknown key" in out.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "harness.cli", "config", "validate", str(write(tmp_path, GOOD, "good.yaml"))],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
