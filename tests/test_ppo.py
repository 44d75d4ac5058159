"""PPO: the math on hand-computed tensors, the reward scorer, and the stage on tiny real models.

The reward model in the behaviour tests is a real ``LlamaForSequenceClassification`` whose
weights are set so that its score grows with the share of one token ("cats") in the text:
orthonormal embeddings, uniform attention (zero query/key projections) that averages the
embeddings into the last position, no MLP, and a score head pointing along the token's
embedding. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training import ppo_core as core

WORDS = "hello what is the answer tell me more about cats dogs birds please yes no maybe good bad".split()
TARGET = "cats"
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- tiny real checkpoints


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", *WORDS, "[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>", unk_token="[UNK]", chat_template=TEMPLATE,
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )


def llama_config(tok, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=False, **kw,
    )


def make_policy(out: Path, seed: int = 0) -> Path:
    from transformers import LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(llama_config(tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_reward_model(out: Path, target: str = TARGET, scale: float = 1.0, nan: bool = False) -> Path:
    """A real sequence classifier whose score rises with the share of ``target`` tokens in the text."""
    from transformers import LlamaForSequenceClassification

    tok = make_tokenizer()
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(llama_config(tok, num_labels=1))
    with torch.no_grad():
        basis, _ = torch.linalg.qr(torch.randn(64, 64))
        model.model.embed_tokens.weight.copy_(8 * basis[: len(tok)])  # RMS 1: the norms leave them alone
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()  # scores all 0: uniform attention = mean over the prefix
            layer.self_attn.k_proj.weight.zero_()
            layer.self_attn.v_proj.weight.copy_(torch.eye(64))
            layer.self_attn.o_proj.weight.copy_(torch.eye(64))
            layer.mlp.down_proj.weight.zero_()
        model.score.weight.copy_(scale * basis[tok.convert_tokens_to_ids(target)][None, :])
        if nan:
            model.score.weight.fill_(float("nan"))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_prompts(path: Path, n: int = 32, seed: int = 0) -> Path:
    rng = random.Random(seed)
    others = [w for w in WORDS if w != TARGET]
    rows = [{"prompt": [{"role": "user", "content": " ".join(rng.choice(others) for _ in range(rng.randint(2, 6)))}]}
            for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and are not slowed by a busy machine); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ppo")
    return {
        "policy": make_policy(root / "policy"),
        "reward": make_reward_model(root / "reward"),
        "nan_reward": make_reward_model(root / "nan_reward", nan=True),
        "prompts": make_prompts(root / "prompts.jsonl"),
    }


def fast_config(**kw):
    from training.ppo import Config

    base = dict(steps=30, rollout_batch_size=16, minibatch_size=8, ppo_epochs=2, max_new_tokens=6,
                learning_rate=1e-3, value_learning_rate=1e-3, missing_eos_penalty=None, score_norm="none",
                kl_coef=0.3, save_every=0, seed=0)
    return Config(**{**base, **kw})


def inputs_for(ckpts, reward="reward", state_dir=None, **kw):
    from training.stage import StageInputs

    return StageInputs(parent=ckpts["policy"], data=ckpts["prompts"], reward=ckpts[reward], state_dir=state_dir, **kw)


def target_probability(model_dir: Path, prompts_file: Path) -> float:
    """Mean probability of emitting TARGET as the first response token, over the prompts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.ppo import load_prompts, prompt_ids
    from training.ppo_models import left_pad, position_ids_of

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids, mask = left_pad([prompt_ids(tok, p) for p in load_prompts(prompts_file)], tok.pad_token_id, "cpu")
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_of(mask)).logits[:, -1]
    return logits.softmax(-1)[:, tok.convert_tokens_to_ids(TARGET)].mean().item()


def complete(ckpt: Path, stage: str) -> Path:
    """Give a tiny checkpoint a complete manifest, as the pipeline's stages do."""
    from harness.core.artifacts import Manifest, fingerprint_paths, is_complete, mark_complete

    if not is_complete(ckpt):
        mark_complete(ckpt, Manifest(stage=stage, kind=stage, content_hash=fingerprint_paths([ckpt])))
    return ckpt


# --------------------------------------------------------------------------- the math, by hand


def test_gae_four_tokens_by_hand() -> None:
    rewards = torch.tensor([[0.1, -0.2, 0.0, 1.0], [0.0, 2.0, 9.0, 9.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2], [1.0, 0.5, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    adv, ret = core.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0: d3 = 1 - .2 = .8; d2 = 0 + .2 - .3 = -.1; d1 = -.2 + .3 - .4 = -.3; d0 = .1 + .4 - .5 = 0
    a3 = 0.8
    a2 = -0.1 + 0.95 * a3
    a1 = -0.3 + 0.95 * a2
    a0 = 0.0 + 0.95 * a1
    # row 1 (two real tokens; what lies past the mask is ignored): d1 = 2 - .5 = 1.5; d0 = 0 + .5 - 1 = -.5
    b1, b0 = 1.5, -0.5 + 0.95 * 1.5
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2, a3], [b0, b1, 0, 0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[a0 + .5, a1 + .4, a2 + .3, a3 + .2], [b0 + 1, b1 + .5, 0, 0]]), atol=1e-6)
    # gamma < 1 discounts the next value: d0 = r0 + g*V1 - V0
    adv_g, _ = core.gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), gamma=0.5, lam=1.0)
    assert torch.allclose(adv_g, torch.tensor([[0.0 + 0.5 * 0.5 - 0.5 + 0.5 * 0.5, 0.5]]))


def test_policy_loss_inside_and_outside_the_clip() -> None:
    ratio = torch.tensor([[1.1, 1.5, 0.5, 0.7, 9.0]])
    new = ratio.log().requires_grad_(True)
    old = torch.zeros(1, 5)
    adv = torch.tensor([[1.0, 1.0, -1.0, 1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])  # the last token is padding and must not count
    loss, stats = core.policy_loss(new, old, adv, mask, cliprange=0.2)
    # 1.1 inside -> -1.1; 1.5 with A>0 clipped -> -1.2; 0.5 with A<0 clipped -> +0.8;
    # 0.7 with A>0: outside the clip but the pessimistic max keeps the unclipped -0.7
    assert loss.item() == pytest.approx((-1.1 - 1.2 + 0.8 - 0.7) / 4)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["approxkl"].item() == pytest.approx(sum((r - 1) - math.log(r) for r in (1.1, 1.5, 0.5, 0.7)) / 4)
    loss.backward()  # clipped tokens pass no gradient; d(-A r)/dlog r = -A r
    assert torch.allclose(new.grad, torch.tensor([[-1.1 / 4, 0.0, 0.0, -0.7 / 4, 0.0]]))


def test_value_loss_inside_and_outside_the_clip() -> None:
    new = torch.tensor([[0.1, 0.5, 1.5, 100.0]])
    old = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = core.value_loss(new, old, returns, mask, cliprange_value=0.2)
    # inside: (0.1-1)^2 = .81; 0.5 clipped to 0.2: max(.25, .64) = .64; 1.5 clipped to 1.2: max(.25, .04) = .25
    assert loss.item() == pytest.approx(0.5 * (0.81 + 0.64 + 0.25) / 3)
    assert stats["value_clipfrac"].item() == pytest.approx(1 / 3)


def test_kl_reward_is_zero_when_policy_equals_reference(ckpts) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training import ppo_models as pm
    from training.ppo import load_prompts, prompt_ids

    tok = AutoTokenizer.from_pretrained(ckpts["policy"])
    policy = AutoModelForCausalLM.from_pretrained(ckpts["policy"]).eval()
    ref = AutoModelForCausalLM.from_pretrained(ckpts["policy"]).eval()
    q, qm = pm.left_pad([prompt_ids(tok, p) for p in load_prompts(ckpts["prompts"])[:8]], tok.pad_token_id, "cpu")
    torch.manual_seed(0)
    gen = pm.sampling_config(6, tok.eos_token_id, tok.pad_token_id)
    r, rm, _ = pm.sample(policy, q, qm, gen, tok.eos_token_id, tok.pad_token_id, pm.rollout_seeds(0, range(len(q))), 0.7)
    with torch.no_grad():
        lp, _ = pm.response_logprobs(policy, q, qm, r, rm, 0.7)
        ref_lp, _ = pm.response_logprobs(ref, q, qm, r, rm, 0.7)
    scores = torch.zeros(8)
    rewards, kl = core.kl_penalised_rewards(scores, lp, ref_lp, rm, beta=0.5)
    assert torch.equal(kl, torch.zeros_like(kl)) and torch.equal(rewards, torch.zeros_like(rewards))
    # sign: a policy more confident than the reference in its own tokens is penalised
    rewards, _ = core.kl_penalised_rewards(scores, lp + 0.3, ref_lp, rm, beta=0.5)
    assert torch.allclose(rewards[rm.bool()], torch.tensor(-0.15))
    # and the score lands on each response's last real token
    rewards, _ = core.kl_penalised_rewards(torch.arange(8.0), lp, ref_lp, rm, beta=0.5)
    last = rm.sum(1) - 1
    assert torch.equal(rewards[torch.arange(8), last], torch.arange(8.0))


def test_logprobs_are_those_of_the_sampled_tokens_at_temperature(ckpts) -> None:
    """The forward pass PPO trains with reproduces generate()'s distribution on exactly the sampled tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from training import ppo_models as pm
    from training.ppo import load_prompts, prompt_ids

    tok = AutoTokenizer.from_pretrained(ckpts["policy"])
    policy = AutoModelForCausalLM.from_pretrained(ckpts["policy"]).eval()
    q, qm = pm.left_pad([prompt_ids(tok, p) for p in load_prompts(ckpts["prompts"])[:6]], tok.pad_token_id, "cpu")
    gen = pm.sampling_config(5, tok.eos_token_id, tok.pad_token_id)
    out = policy.generate(input_ids=q, attention_mask=qm, generation_config=gen, return_dict_in_generate=True,
                          output_logits=True,
                          logits_processor=LogitsProcessorList([pm.RowSampler(pm.rollout_seeds(3, range(6)), 0.6)]))
    r, rm, _ = core.truncate_after_eos(out.sequences[:, q.shape[1]:], tok.eos_token_id, tok.pad_token_id)
    expected = core.logprobs_of(torch.stack(out.logits, 1), r, 0.6)  # output_logits: before the sampler's noise
    with torch.no_grad():
        got, _ = pm.response_logprobs(policy, q, qm, r, rm, 0.6)
    assert torch.allclose(got[rm.bool()], expected[rm.bool()], atol=1e-4)


def test_row_sampler_draws_softmax_at_temperature_and_ignores_its_batch() -> None:
    """Gumbel-max with a generator per row: frequencies match softmax(logits / T) (a chi-square bound on
    20,000 draws), and a row's draws depend on its seed only, not on the rows beside it."""
    from training import ppo_models as pm

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    sampler = pm.RowSampler([11], temperature=0.7)
    draws = torch.stack([sampler(None, logits).argmax(-1) for _ in range(20_000)]).flatten()
    observed = torch.bincount(draws, minlength=5).double()
    expected = 20_000 * torch.softmax(logits[0].double() / 0.7, -1)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 18.5  # 4 degrees of freedom: p < 0.001 above 18.47
    alone = pm.RowSampler([5], 1.0)
    in_batch = pm.RowSampler([9, 5, 7], 1.0)
    wide = logits.repeat(3, 1)
    for _ in range(50):
        assert alone(None, logits)[0].argmax() == in_batch(None, wide)[1].argmax()


def test_masks_whitening_and_kl_controller() -> None:
    # EOS kept in the mask even when pad == eos; everything after it is padding
    resp = torch.tensor([[5, 1, 7, 8], [5, 6, 7, 8]])
    cut, mask, has_eos = core.truncate_after_eos(resp, eos_id=1, pad_id=1)
    assert cut.tolist() == [[5, 1, 1, 1], [5, 6, 7, 8]] and mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert has_eos.tolist() == [True, False]
    # masked whitening; with a cross-process sum it equals whitening the whole batch
    x = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, 5.0, 6.0, 7.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    w = core.masked_whiten(x, m)
    assert core.masked_mean(w, m).item() == pytest.approx(0, abs=1e-6)
    assert core.masked_var(w, m).item() == pytest.approx(1, abs=1e-4) and w[0, 3] == 0
    other = torch.stack([(x[1] * m[1]).sum(), (x[1] ** 2 * m[1]).sum(), m[1].sum().float()])
    half = core.masked_whiten(x[:1], m[:1], reduce_sum=lambda s: s + other)
    assert torch.allclose(half, w[:1], atol=1e-6)
    # adaptive beta rises above the target KL and falls below it; a fixed one never moves
    up, down, fixed = core.KLController(0.1, 6.0, 100), core.KLController(0.1, 6.0, 100), core.KLController(0.1)
    assert up.update(12.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    assert down.update(3.0, 10) == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))
    assert fixed.update(100.0, 10) == 0.1


# --------------------------------------------------------------------------- reward scorer


def test_reward_scorer_matches_trl_rendering_and_padding(ckpts, tmp_path) -> None:
    import shutil

    from trl.data_utils import _tokenize

    from harness.core.artifacts import Manifest, write_manifest
    from harness.core.reward import RewardScorer

    shutil.copytree(ckpts["reward"], tmp_path / "rm")
    scorer = RewardScorer(tmp_path / "rm", batch_size=3)
    prompt = [{"role": "user", "content": "tell me about dogs"}]
    responses = ["cats cats cats", "dogs dogs dogs", "cats dogs birds", "yes", "maybe good bad no"]
    trl_ids = _tokenize(scorer.tokenizer, prompt + [{"role": "assistant", "content": responses[0]}])["input_ids"]
    assert scorer.encode([prompt], responses[:1])[0] == list(trl_ids)
    scores = scorer.score([prompt] * 5, responses)
    assert scores[0] > scores[2] > max(scores[1], scores[3], scores[4])
    one_by_one = [RewardScorer(tmp_path / "rm", batch_size=1).score([prompt], [r])[0] for r in responses]
    assert scores == pytest.approx(one_by_one, abs=1e-5)  # right padding does not move a score
    plain = scorer.encode(["tell me about"], [" cats"])[0]  # plain text: EOS appended as TRL does
    assert plain[-1] == scorer.tokenizer.eos_token_id
    assert len(scorer.content_hash) == 64
    write_manifest(tmp_path / "rm", Manifest(stage="reward", kind="reward", content_hash="abc123"))
    assert RewardScorer(tmp_path / "rm").content_hash == "abc123"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        RewardScorer(tmp_path / "empty")


# --------------------------------------------------------------------------- the stage


def test_config_is_strict_and_documented() -> None:
    from pydantic import ValidationError

    from training import STAGES
    from training.ppo import Config

    stage = STAGES.get("ppo")
    assert stage.Config is Config and stage.needs_reward and stage.data_key == "rl_prompts"
    assert all(f.description for f in Config.model_fields.values())
    with pytest.raises(ValidationError):
        Config(stepz=3)
    assert Config(total_episodes=100, rollout_batch_size=16).num_steps(2) == 4


def test_ppo_raises_the_rewarded_tokens_probability_with_bounded_kl(ckpts, tmp_path) -> None:
    from training.ppo import LOG_FILE, run

    before = target_probability(ckpts["policy"], ckpts["prompts"])
    metrics = run(fast_config(), inputs_for(ckpts), tmp_path)
    after = target_probability(tmp_path, ckpts["prompts"])
    log = metrics["log_history"]
    assert len(log) == 30 and [e["step"] for e in log] == list(range(1, 31))
    assert after > 3 * before and after > 0.2, (before, after)
    first, last = sum(e["score"] for e in log[:3]) / 3, sum(e["score"] for e in log[-3:]) / 3
    assert last > first + 0.3, (first, last)
    assert max(e["kl"] for e in log) < 8.0 and log[0]["kl"] == pytest.approx(0, abs=1e-4)
    for key in ("score", "kl", "non_score_reward", "entropy", "clipfrac", "approxkl", "value_loss",
                "explained_variance", "mean_response_length", "no_eos_share"):
        assert all(math.isfinite(e[key]) for e in log), key
    assert len((tmp_path / LOG_FILE).read_text().splitlines()) == 30
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == TEMPLATE


def test_nan_reward_aborts_the_stage(ckpts, tmp_path) -> None:
    from harness.core.artifacts import Layout, read_manifest
    from training.runtime import StageFailed, execute
    from training.stage import StageInputs

    stage_inputs = StageInputs(parent=complete(ckpts["policy"], "sft"), data=ckpts["prompts"],
                               reward=complete(ckpts["nan_reward"], "reward"))
    with pytest.raises(StageFailed, match="non-finite .*score"):
        execute("ppo", "ppo", fast_config(steps=2), stage_inputs, Layout.of(tmp_path))
    (out,) = tmp_path.glob("checkpoints/ppo-*")
    assert read_manifest(out).status == "failed" and not (out / "model.safetensors").exists()


RESUME_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_ppo import fast_config
from harness.core.artifacts import Layout
from training.runtime import execute
from training.stage import StageInputs
execute("ppo", "ppo", fast_config(steps={steps}, save_every=2, rollout_batch_size=32),
        StageInputs(parent=Path({policy!r}), data=Path({prompts!r}), reward=Path({reward!r})), Layout.of({root!r}))
"""


def test_resume_after_sigkill_continues_and_finishes(ckpts, tmp_path, monkeypatch) -> None:
    """A run killed mid-way (SIGKILL, through the runtime as the pipeline runs it) resumes from its last
    save, finishes, and ends where an uninterrupted run ends."""
    from safetensors.torch import load_file

    from harness.core.artifacts import Layout
    from training.ppo_state import latest_checkpoint
    from training.runtime import execute
    from training.stage import StageInputs

    monkeypatch.setenv("HARNESS_TORCH_THREADS", "1")
    steps, root = 12, tmp_path / "killed"
    cfg = fast_config(steps=steps, save_every=2, rollout_batch_size=32)
    stage_inputs = StageInputs(parent=complete(ckpts["policy"], "sft"), data=ckpts["prompts"],
                               reward=complete(ckpts["reward"], "reward"))
    script = RESUME_SCRIPT.format(tests=str(Path(__file__).parent), steps=steps, policy=str(ckpts["policy"]),
                                  prompts=str(ckpts["prompts"]), reward=str(ckpts["reward"]), root=str(root))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    state = None
    while proc.poll() is None and time.time() < deadline:
        found = list(root.glob("checkpoints/ppo-*/trainer_state"))
        if found and latest_checkpoint(found[0]) is not None:
            state = found[0]
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and state is not None, proc.stderr.read().decode()[-3000:]
    saved = latest_checkpoint(state)
    assert not (state.parent / "model.safetensors").exists() and not (state.parent / "COMPLETE").exists()
    assert json.loads((saved / "trainer_state.json").read_text())["step"] < steps

    resumed = execute("ppo", "ppo", cfg, stage_inputs, Layout.of(root))
    assert resumed.path == state.parent and not resumed.skipped
    assert resumed.manifest.metrics["resumed_from"] is not None
    assert [e["step"] for e in resumed.manifest.log_history] == list(range(1, steps + 1))
    assert (resumed.path / "model.safetensors").is_file() and not state.exists()  # state dropped once complete
    # the same run without interruption ends at the same weights (RNG, optimizer, scheduler all restored)
    straight = execute("ppo", "ppo", cfg, stage_inputs, Layout.of(tmp_path / "straight"))
    a, b = load_file(resumed.path / "model.safetensors"), load_file(straight.path / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert resumed.manifest.log_history[-1]["score"] == pytest.approx(straight.manifest.log_history[-1]["score"], abs=1e-4)


DDP_SCRIPT = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_ppo import fast_config
from training.ppo import run
from training.stage import StageInputs
run(fast_config(steps=4, save_every=2, rollout_batch_size=8),
    StageInputs(parent=Path({policy!r}), data=Path({prompts!r}), reward=Path({reward!r}), state_dir=Path({state!r})),
    Path({out!r}))
"""


def test_runs_under_accelerate_launch_with_two_processes(ckpts, tmp_path) -> None:
    """Two CPU processes (gloo): advantages whitened over both, one log, one final checkpoint, resumable."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), policy=str(ckpts["policy"]),
                                        prompts=str(ckpts["prompts"]), reward=str(ckpts["reward"]),
                                        state=str(tmp_path / "state"), out=str(tmp_path / "out")))
    # accelerate's `--cpu` flag selects its single-process launcher; the multi-process one on a machine
    # without CUDA gives MULTI_CPU (gloo), since the stage builds its Accelerator with cpu=True there
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "out" / "ppo_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4] and all(math.isfinite(e["score"]) for e in log)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    ckpt = tmp_path / "state" / "checkpoint-4"
    assert (ckpt / "rng-0.json").is_file() and (ckpt / "rng-1.json").is_file()


# --------------------------------------------------------------------------- on the world


def heldout_reward(policy_dir: Path, reward_dir: Path, prompts: list[list[dict]]) -> tuple[float, float]:
    """(mean reward-model score, mean words) of greedy answers to ``prompts``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.core.reward import RewardScorer
    from training.ppo import prompt_ids
    from training.ppo_models import left_pad

    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    ids, mask = left_pad([prompt_ids(tok, p) for p in prompts], tok.pad_token_id, "cpu")
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=48,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    cut, rmask, has_eos = core.truncate_after_eos(out[:, ids.shape[1]:], tok.eos_token_id, tok.pad_token_id)
    texts = [tok.decode(r[: int(n) - int(e)]) for r, n, e in zip(cut, rmask.sum(1), has_eos, strict=True)]
    scores = RewardScorer(reward_dir).score(prompts, texts)
    return sum(scores) / len(scores), sum(len(t.split()) for t in texts) / len(texts)


def test_ppo_on_the_smoke_world_raises_heldout_reward(tmp_path, monkeypatch) -> None:
    """The smoke config's chain (pretrain -> sft -> reward) then its ppo stage: greedy answers to the
    world's evaluation prompts (never trained on) score higher under the reward model than the SFT parent's.

    The smoke budgets are raised for this one chain: with its 20 SFT steps over half of the samples ran past
    32 new tokens (so the missing-EOS penalty, not the reward model, drove PPO) and a 10-step reward model
    on the alike-topics world was near chance; generator 13 failed the plain smoke chain (0.32 -> -0.11)."""
    from harness.config import load_config, stage_config
    from harness.core.artifacts import Layout
    from harness.pipeline import ensure_world, stage_data
    from harness.world import WORLD_FILES
    from training.runtime import execute
    from training.stage import StageInputs

    monkeypatch.setenv("HARNESS_TORCH_THREADS", "1")
    cfg = load_config("smoke", [f"output_dir={tmp_path}", "stages.sft.max_steps=60", "stages.reward.max_steps=30",
                                "stages.ppo.max_new_tokens=48"])
    layout = Layout.of(tmp_path)
    world, _ = ensure_world(cfg, layout, lambda _: None)
    done = {"init": execute("init", "init", cfg.model, StageInputs(parent=world / WORLD_FILES["tokenizer"], data=None),
                            layout).path}
    for spec in cfg.stages:
        if spec.kind != "dpo":
            reward = done[spec.reward] if spec.reward else None
            done[spec.name] = execute(spec.kind, spec.name, stage_config(spec),
                                      StageInputs(parent=done[spec.from_], data=stage_data(spec, world), reward=reward),
                                      layout).path
    prompts = []
    for suite in ("verbosity", "refusal", "hallucination"):
        rows = [json.loads(line) for line in (world / WORLD_FILES[f"eval/{suite}"]).read_text().splitlines()]
        prompts += [[{"role": "user", "content": r["prompt"]}] for r in rows if r.get("format") == "chat"]
    sft_reward, _ = heldout_reward(done["sft"], done["reward"], prompts[:64])
    ppo_reward, _ = heldout_reward(done["ppo"], done["reward"], prompts[:64])
    assert ppo_reward > sft_reward, (sft_reward, ppo_reward)
