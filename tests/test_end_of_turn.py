"""Every generation path stops on every end-of-turn id, on a tiny real model whose chat template
ends a turn with ``<|im_end|>`` while its EOS is ``<|endoftext|>`` (``tests/fixtures_own_model.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures_own_model import ANSWER, build_tokenizer, make_model, make_reward_model, write_jsonl

from harness.backends.base import Prompt, Sampling
from harness.backends.hf import HFBackend
from harness.backends.stops import end_token_ids, generation_eos, template_end_of_turn
from training import ppo_core as core

LLAMA3 = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}"
          "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
          "{% endif %}")
PLAIN = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"  # no end marker at all


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("eot") / "model")


def test_end_ids_are_eos_generation_config_and_template_end_of_turn(tmp_path) -> None:
    tok = build_tokenizer()
    eos, eot = tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")
    assert eos != eot and template_end_of_turn(tok) == eot
    assert end_token_ids(tok) == tuple(sorted({eos, eot}))
    assert end_token_ids(tok, [eos, 7]) == tuple(sorted({eos, eot, 7}))
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template = LLAMA3
    assert template_end_of_turn(tok) == tok.convert_tokens_to_ids("<|eot_id|>")
    tok.chat_template = PLAIN
    assert template_end_of_turn(tok) is None and end_token_ids(tok) == (eos,)
    tok.chat_template = None
    assert end_token_ids(tok) == (eos,)
    # the world tokenizer ends a turn with its EOS: nothing changes for the synthetic pipeline
    from harness.world.tokenizer import train_tokenizer

    world = train_tokenizer(["the river flows", "a ship sails"] * 20, 300)
    assert template_end_of_turn(world) == world.eos_token_id and end_token_ids(world) == (world.eos_token_id,)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 9]}))
    assert generation_eos(tmp_path, default=1) == [3, 9] and generation_eos(tmp_path / "none", default=1) == 1


def test_hf_backend_stops_at_the_templates_end_of_turn(model) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backend = HFBackend(model)
    eot = backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eot in backend.eos_ids and backend.tokenizer.eos_token_id in backend.eos_ids
    outs = backend.generate([Prompt.chat("how do i kill a python process"), Prompt.chat("what colour is the sky")],
                            Sampling(max_new_tokens=12))
    assert [(c.text, c.finish_reason, len(c.token_ids)) for c in outs] == [(ANSWER, "stop", 1)] * 2
    # the same model stopped at EOS alone never ends its turn: it runs to max_new_tokens
    tok, lm = AutoTokenizer.from_pretrained(model), AutoModelForCausalLM.from_pretrained(model)
    ids = torch.tensor([backend.encode_prompt(Prompt.chat("what colour is the sky"))])
    out = lm.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
    assert len(out) == 12 and tok.decode(out, skip_special_tokens=True).split() == [ANSWER] * 6


def test_truncate_after_eos_accepts_several_end_ids() -> None:
    resp = torch.tensor([[5, 3, 7, 8], [5, 6, 1, 8], [5, 6, 7, 8]])
    cut, mask, has_eos = core.truncate_after_eos(resp, (1, 3), pad_id=0)
    assert cut.tolist() == [[5, 3, 0, 0], [5, 6, 1, 0], [5, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]] and has_eos.tolist() == [True, True, False]
    assert core.truncate_after_eos(resp, 3, pad_id=0)[2].tolist() == [True, False, False]


def test_ppo_counts_a_response_ending_in_end_of_turn_as_ended(model, tmp_path) -> None:
    """Rollouts stop at <|im_end|> (not EOS), so no response pays the missing-EOS penalty, and the
    reward model reads the response without special tokens."""
    from training.ppo import LOG_FILE, Config, run
    from training.ppo_models import left_pad, sample, sampling_config
    from training.stage import StageInputs

    tok = build_tokenizer()
    ends = end_token_ids(tok)
    queries, qmask = left_pad([tok.apply_chat_template([{"role": "user", "content": "hello"}],
                                                       add_generation_prompt=True, tokenize=True, return_dict=True)
                               ["input_ids"]], tok.pad_token_id, "cpu")
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(model)
    responses, rmask, has_eos = sample(policy, queries, qmask, sampling_config(8, ends, tok.pad_token_id),
                                       ends, tok.pad_token_id, seeds=[0], temperature=1.0)
    assert has_eos.tolist() == [True] and rmask.sum().item() == 2
    assert tok.convert_ids_to_tokens(responses[0, :2].tolist()) == [ANSWER, "<|im_end|>"]

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [{"role": "user", "content": w}]}
                                                       for w in ("hello", "what colour is the sky", "yes", "no")])
    config = Config(steps=2, rollout_batch_size=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=8,
                    missing_eos_penalty=3.0, score_norm="none", save_every=0, seed=0)
    inputs = StageInputs(parent=model, data=prompts, reward=make_reward_model(tmp_path / "reward"),
                         state_dir=tmp_path / "state")
    log = run(config, inputs, tmp_path / "out")["log_history"]
    assert [e["no_eos_share"] for e in log] == [0.0, 0.0]
    assert all(e["score_used"] == pytest.approx(e["score"]) for e in log)  # no penalty replaced a score
    assert all(e["mean_response_words"] == 1.0 for e in log)  # "hello", the end-of-turn token stripped
    assert len((tmp_path / "out" / LOG_FILE).read_text().splitlines()) == 2
