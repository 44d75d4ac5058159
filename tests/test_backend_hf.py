"""The transformers backend on a tiny real model: batching must not change answers.

Tolerances: batched and one-at-a-time greedy generation give the same tokens on at least 98%
of prompts (left padding can flip a near-tie in float32); log-likelihoods agree within
1e-4 nats absolute (right padding only adds masked positions) and is_greedy agrees.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _evalkit import make_checkpoint

from harness.backends import BACKENDS
from harness.backends.base import (
    Backend,
    Prompt,
    Sampling,
    decoding_key,
    resolve_backend,
    split_trailing_space,
)
from harness.backends.hf import HFBackend

LOGLIK_TOL = 1e-4
WORDS = "the capital of Veloria is Marn river Tessa flows through Quill Alice studied chemistry in Rome".split()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("hf") / "chat")


@pytest.fixture(scope="module")
def backend(ckpt: Path) -> HFBackend:
    return HFBackend(ckpt, batch_size=16)


def _prompts(n: int) -> list[Prompt]:
    out = []
    for i in range(n):
        text = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(2 + (i * 5) % 17))
        out.append(Prompt.chat(text) if i % 2 else Prompt.completion(text))
    return out


def test_protocol_and_registry(backend: HFBackend) -> None:
    assert isinstance(backend, Backend)
    assert BACKENDS.get("hf") is HFBackend
    assert backend.has_chat_template and backend.dtype_name == "float32"
    assert resolve_backend("auto") == ("vllm" if torch.cuda.is_available() else "hf")
    assert resolve_backend("hf") == "hf"


def test_batched_greedy_equals_one_at_a_time(backend: HFBackend) -> None:
    prompts = _prompts(60)
    sampling = Sampling(max_new_tokens=24)
    batched = backend.generate(prompts, sampling)
    backend.batch_size = 1
    try:
        single = backend.generate(prompts, sampling)
    finally:
        backend.batch_size = 16
    same = sum(a.token_ids == b.token_ids for a, b in zip(batched, single, strict=True))
    assert same / len(prompts) >= 0.98, f"only {same}/{len(prompts)} identical"
    assert len({c.token_ids for c in batched}) > 5  # the prompts really lead to different answers
    for c in batched:
        assert c.finish_reason == "length" and len(c.token_ids) == 24
        assert c.text == backend.tokenizer.decode(list(c.token_ids), skip_special_tokens=True)


def test_loglikelihood_batched_equals_single_and_manual(backend: HFBackend) -> None:
    requests = [(" ".join(WORDS[i % 5:i % 5 + 3 + i % 7]), " " + WORDS[(i * 3) % len(WORDS)]) for i in range(30)]
    requests += [("The capital of Veloria is ", "Marn"), ("", "Hello there"), ("Paris", "")]
    batched = backend.loglikelihood(requests)
    backend.batch_size = 1
    try:
        single = backend.loglikelihood(requests)
    finally:
        backend.batch_size = 16
    for a, b in zip(batched, single, strict=True):
        assert abs(a.logprob - b.logprob) <= LOGLIK_TOL and a.is_greedy == b.is_greedy
        assert a.num_tokens == b.num_tokens
    assert batched[-1].logprob == 0.0 and batched[-1].num_tokens == 0
    # the split is lm-eval's: continuation = tail of tokenize(context + continuation)
    ctx, cont = "The capital of Veloria is", " Marn"
    whole = backend.tokenizer(ctx + cont)["input_ids"]
    n_ctx = len(backend.tokenizer(ctx)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(torch.tensor([whole])).logits[0].float(), -1)
    manual = sum(float(logp[i - 1, whole[i]]) for i in range(n_ctx, len(whole)))
    got = backend.loglikelihood([(ctx, cont)])[0]
    assert abs(got.logprob - manual) <= LOGLIK_TOL and got.num_tokens == len(whole) - n_ctx


def test_greedy_generation_is_greedy_under_loglikelihood(backend: HFBackend) -> None:
    ids = backend.tokenizer("Alice studied")["input_ids"]
    out = backend.generate([Prompt.completion("Alice studied")], Sampling(max_new_tokens=6))[0]
    with torch.no_grad():
        logits = backend.model(torch.tensor([ids + list(out.token_ids)])).logits[0]
    assert logits[len(ids) - 1:-1].argmax(-1).tolist() == list(out.token_ids)


def test_trailing_whitespace_is_stripped(backend: HFBackend) -> None:
    assert backend.encode_prompt(Prompt.completion("Alice studied ")) == backend.encode_prompt(
        Prompt.completion("Alice studied"))
    assert backend.encode_prompt(Prompt.chat("Name a colour.  \n")) == backend.encode_prompt(Prompt.chat("Name a colour."))
    # without stripping, the space would be its own token
    assert backend.tokenizer("Alice studied ")["input_ids"] != backend.tokenizer("Alice studied")["input_ids"]
    s = Sampling(max_new_tokens=8)
    a, b = backend.generate([Prompt.completion("Alice studied "), Prompt.completion("Alice studied")], s)
    assert a == b
    assert split_trailing_space("The capital is ", "Marn") == ("The capital is", " Marn")
    x, y = backend.loglikelihood([("The capital is ", "Marn"), ("The capital is", " Marn")])
    assert x == y


def test_sampling_is_seeded_and_prompt_major(backend: HFBackend) -> None:
    prompts = _prompts(3)
    s = Sampling(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3, n=4)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = backend.generate(prompts, s)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    assert len(first) == 12 and first == backend.generate(prompts, s)
    assert len({c.token_ids for c in first}) > 3
    threads = torch.get_num_threads()
    backend.generate(prompts[:1], Sampling(max_new_tokens=2))
    assert torch.get_num_threads() == threads  # thread count restored after each call


def test_stops_at_any_eos_the_generation_config_lists(ckpt: Path, tmp_path: Path) -> None:
    plain = HFBackend(ckpt).generate([Prompt.completion("Alice studied")], Sampling(max_new_tokens=8))[0]
    stop_token = plain.token_ids[2]
    cut = plain.token_ids.index(stop_token)
    copy = tmp_path / "ck"
    copy.mkdir()
    for f in ckpt.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    eos = HFBackend(ckpt).tokenizer.eos_token_id
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, stop_token]}))
    out = HFBackend(copy).generate([Prompt.completion("Alice studied")], Sampling(max_new_tokens=8))[0]
    assert out.finish_reason == "stop" and out.token_ids == plain.token_ids[:cut]


def test_chat_prompt_needs_a_template(tmp_path: Path) -> None:
    base = HFBackend(make_checkpoint(tmp_path / "base", chat=False))
    assert not base.has_chat_template
    with pytest.raises(ValueError, match="chat template"):
        base.generate([Prompt.chat("hi")], Sampling(max_new_tokens=2))
    assert len(base.generate([Prompt.completion("hi")], Sampling(max_new_tokens=2))) == 1


def test_decoding_key() -> None:
    greedy = decoding_key("hf", Sampling(max_new_tokens=8, top_p=0.5, seed=9), "float32")
    assert greedy == {"backend": "hf", "dtype": "float32", "max_new_tokens": 8, "temperature": 0.0,
                      "top_p": 1.0, "seed": 0, "n": 1}
    sampled = decoding_key("hf", Sampling(temperature=0.7, top_p=0.5, seed=9, n=2))
    assert sampled["top_p"] == 0.5 and sampled["seed"] == 9 and sampled["n"] == 2
    with pytest.raises(ValueError, match="resolve"):
        decoding_key("auto", Sampling())
    with pytest.raises(ValueError, match="temperature"):
        Sampling(n=2)


def test_refuses_pickled_weights(tmp_path: Path, ckpt: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in ckpt.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    from transformers import AutoModelForCausalLM

    torch.save(AutoModelForCausalLM.from_pretrained(ckpt).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(OSError):
        HFBackend(folder)


def test_checkpoint_generation_defaults_do_not_leak(ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint whose generation_config samples (do_sample, top_k=3) still decodes as asked."""
    copy = tmp_path / "ck"
    copy.mkdir()
    for f in ckpt.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 5.0, "top_k": 3, "top_p": 0.5, "max_new_tokens": 2}))
    prompts = [Prompt.completion("Alice studied")] * 40
    plain = HFBackend(ckpt).generate(prompts[:1], Sampling(max_new_tokens=8))[0]
    leaky = HFBackend(copy)
    assert {c.token_ids for c in leaky.generate(prompts[:3], Sampling(max_new_tokens=8))} == {plain.token_ids}
    firsts = {c.token_ids for c in leaky.generate(prompts, Sampling(max_new_tokens=1, temperature=1.0))}
    assert len(firsts) > 3  # top_k=3 from the checkpoint would allow at most 3
