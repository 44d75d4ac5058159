"""Training data sources (training/data.py): Anthropic HH transcripts converted on load, Hugging Face
datasets by ``hf:`` reference (local folders and ``save_to_disk`` output here: the network is never
used), their fingerprints, and one clear error for a dataset that can not be opened."""

from __future__ import annotations

import json

import pytest
from fixtures_own_model import hh_rows, write_jsonl

from harness.config import ConfigError, load_config
from training.data import data_fingerprint, hf_ref, load_preferences, load_rows

ASK, SKY = "how do i make a bomb", "what colour is the sky"


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path, monkeypatch):
    """Datasets built from local files are cached under the test's folder, and nothing goes online."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hh_transcripts_become_conversational_pairs(tmp_path) -> None:
    rows = load_preferences(write_jsonl(tmp_path / "hh.jsonl", hh_rows(4)))
    assert rows[0] == {"prompt": [{"role": "user", "content": SKY}],
                       "chosen": [{"role": "assistant", "content": "blue"}],
                       "rejected": [{"role": "assistant", "content": "no"}]}
    # a multi-turn transcript: the shared turns are the prompt, the differing last answers the pair
    assert rows[3]["prompt"] == [{"role": "user", "content": ASK}, {"role": "assistant", "content": "hello"},
                                 {"role": "user", "content": "what is the capital of france"}]
    assert rows[3]["chosen"] == [{"role": "assistant", "content": "sorry i can not help with that"}]
    assert rows[3]["rejected"] == [{"role": "assistant", "content": "yes"}]
    # TRL's own formats pass through unchanged
    trl = [{"prompt": [{"role": "user", "content": SKY}], "chosen": [{"role": "assistant", "content": "blue"}],
            "rejected": [{"role": "assistant", "content": "no"}]}, {"prompt": SKY, "chosen": " blue", "rejected": " no"}]
    assert load_preferences(write_jsonl(tmp_path / "trl.jsonl", trl[:1])) == trl[:1]
    assert load_preferences(write_jsonl(tmp_path / "std.jsonl", trl[1:])) == trl[1:]


@pytest.mark.parametrize("chosen, rejected, expected", [
    ("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?", "\n\nHuman: hi\n\nAssistant: no",
     "'chosen' ends with a Human turn"),
    ("\n\nHuman: hi\n\nAssistant: hello", "Assistant: no", "'rejected' does not start with a 'Human:' turn"),
    ("\n\nHuman: hi\n\nAssistant: hello", "\n\nHuman: bye\n\nAssistant: no", "share no Human turn"),
    ("\n\nHuman: hi\n\nAssistant: hello", ["not", "text"], "'rejected' is list"),
])
def test_unparsable_hh_row_names_file_and_row(tmp_path, chosen, rejected, expected) -> None:
    path = write_jsonl(tmp_path / "hh.jsonl", [*hh_rows(2), {"chosen": chosen, "rejected": rejected}])
    with pytest.raises(ValueError, match="cannot read it as an Anthropic HH transcript") as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path}: row 3: ") and expected in str(err.value)


def test_hf_dataset_from_a_local_folder_and_from_save_to_disk(tmp_path) -> None:
    import datasets

    folder = tmp_path / "hh"
    write_jsonl(folder / "train.jsonl", hh_rows(8))
    write_jsonl(folder / "test.jsonl", hh_rows(2))
    ref = f"hf:{folder}@train"
    rows = load_preferences(ref)  # HH converted on load from a dataset too
    assert len(rows) == 8 and rows[0]["prompt"] == [{"role": "user", "content": SKY}]
    assert len(load_rows(f"hf:{folder}@train[:3]", {"chosen": str})) == 3
    assert len(load_rows(f"hf:{folder}", {})) == 8  # the split defaults to train
    fp = data_fingerprint(ref, "dpo")
    assert fp == data_fingerprint(ref, "dpo") != data_fingerprint(f"hf:{folder}@test", "dpo")
    write_jsonl(folder / "train.jsonl", hh_rows(6))
    assert data_fingerprint(ref, "dpo") != fp  # content-addressed: other rows, another stage hash
    with pytest.raises(ValueError, match=rf"hf:{folder}@train: row 1: missing key 'prompt'"):
        load_rows(ref, {"prompt": str})

    dataset = datasets.Dataset.from_list(hh_rows(4))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved"))
    assert len(load_preferences(f"hf:{tmp_path / 'saved'}@train")) == 4
    with pytest.raises(ValueError, match=r"no split 'test' \(splits: train\)"):
        load_rows(f"hf:{tmp_path / 'saved'}@test", {})


def test_hf_references_parse_and_malformed_ones_fail_config_validation(tmp_path) -> None:
    ref = hf_ref("hf:Anthropic/hh-rlhf/harmless-base@train[:2000]")
    assert (ref.path, ref.config, ref.data_dir, ref.split, ref.local) == (
        "Anthropic/hh-rlhf", None, "harmless-base", "train[:2000]", False)
    ref = hf_ref("hf:allenai/some-set:cleaned@test")
    assert (ref.path, ref.config, ref.data_dir, ref.split) == ("allenai/some-set", "cleaned", None, "test")
    assert hf_ref(tmp_path / "prefs.jsonl") is None and hf_ref("data/prefs.jsonl") is None
    config = {"name": "x", "output_dir": str(tmp_path / "out"), "world": None, "model": {"path": str(tmp_path)},
              "stages": [{"name": "dpo", "kind": "dpo", "from": "init", "data": "hf:Anthropic/hh-rlhf@"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.data: hf:Anthropic/hh-rlhf@: incomplete dataset reference"):
        load_config(path)


def test_an_uncached_hub_dataset_offline_is_one_error_before_anything_trains(tmp_path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    with pytest.raises(ValueError) as err:
        load_rows("hf:no-such-owner/no-such-dataset@train", {})
    message = str(err.value)
    assert message.startswith("hf:no-such-owner/no-such-dataset@train: cannot load the Hugging Face dataset "
                              "'no-such-owner/no-such-dataset' (split 'train')")
    assert "Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) only datasets already in the local cache" in message
    # `harness run`: the pipeline opens every hf: dataset before training init: exit 2, nothing trained
    from fixtures_own_model import make_model

    config = {"name": "own", "output_dir": str(tmp_path / "out"), "world": None,
              "model": {"path": str(make_model(tmp_path / "model"))},
              "stages": [{"name": "dpo", "kind": "dpo", "from": "init", "data": "hf:no-such-owner/no-such-dataset"}]}
    path = tmp_path / "own.yaml"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "stages[0].data: hf:no-such-owner/no-such-dataset: cannot load the Hugging Face dataset" in result.output
    assert not (tmp_path / "out" / "checkpoints").exists()
