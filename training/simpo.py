"""Stage kind ``simpo``: SimPO, a reference-free preference method, through TRL's experimental CPO trainer.

SimPO (Meng et al. 2024) needs no reference model: its implicit reward is the policy's
*length-normalised* log-likelihood of an answer, β · mean log π(y|x), and the loss asks the
chosen answer's reward to beat the rejected one's by a margin γ:
``−log σ(β·(mean log π(y_w|x) − mean log π(y_l|x)) − γ)``. ``cpo_alpha`` adds a NLL term on
the chosen answers (CPO's behaviour-cloning regulariser; 0 is plain SimPO), the counterpart of
the ``sft`` term in this harness's DPO. Data: the preference pairs DPO reads
(:func:`training.data.load_preferences`).

**Pinned.** ``trl.experimental`` promises no stable API: this stage is written against
``trl.experimental.cpo`` of TRL :data:`TRL_SERIES` (``CPOConfig(loss_type="simpo", simpo_gamma,
cpo_alpha)``, ``CPOTrainer(model, args, train_dataset, processing_class)``) and refuses another
TRL series with a message, rather than train something else under the same name. To move it:
check the new ``trl/experimental/cpo`` (loss, length normalisation, defaults), then bump
``TRL_SERIES`` (and ``constraints.txt``).

Metrics: ``pairs`` and the last logged ``rewards/accuracies``, ``rewards/margins``, ``nll_loss``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field

from training.runtime import TrainOptions
from training.stage import StageDef, StageInputs

TRL_SERIES = "1.16"  # the TRL release series whose trl.experimental.cpo this stage is written against


class Config(TrainOptions):
    """SimPO options (defaults: the default world's preference pairs on the SFT model)."""

    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(4.0, gt=0, description="Passes over the preference pairs.")
    per_device_train_batch_size: int = Field(16, ge=1, description="Pairs per device per forward pass.")
    max_length: int = Field(256, ge=8, description="Longest prompt + response in tokens; longer answers are truncated.")
    beta: float = Field(2.0, gt=0, description="Scale of the length-normalised reward (SimPO's β; the paper uses 2-10).")
    simpo_gamma: float = Field(
        0.5, ge=0, description="Target reward margin γ between chosen and rejected (in units of the scaled reward).")
    cpo_alpha: float = Field(
        0.0, ge=0, description="Weight of the NLL term on the chosen answers (0: plain SimPO; > 0: CPO-SimPO).")
    save_steps: int = Field(200, ge=1, description="Save a resumable trainer checkpoint every N steps.")


def check_trl() -> None:
    """Refuse a TRL outside the series this stage was written against (module docstring)."""
    import trl

    if ".".join(trl.__version__.split(".")[:2]) != TRL_SERIES:
        raise RuntimeError(
            f"simpo uses trl.experimental.cpo, written against TRL {TRL_SERIES}.x; TRL {trl.__version__} is installed. "
            f"Experimental APIs change between releases: install trl=={TRL_SERIES}.* (constraints.txt), or check "
            "training/simpo.py against the new trl/experimental/cpo and bump TRL_SERIES"
        )


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    check_trl()
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from training.data import load_preferences
    from training.runtime import load_causal_lm, load_tokenizer, run_trainer, save_checkpoint, train_args

    if inputs.data is None:
        raise ValueError("simpo needs preference pairs (`data:`), e.g. the world's preferences.jsonl")
    rows = load_preferences(inputs.data)
    keys = ["prompt", "chosen", "rejected"] if "prompt" in rows[0] else ["chosen", "rejected"]
    tok = load_tokenizer(inputs.parent, inputs)
    args = CPOConfig(
        # CPO batches have no `input_ids` for the Trainer to count: tokens are estimated below
        **train_args(config, inputs, include_num_input_tokens_seen="no"), max_length=config.max_length, loss_type="simpo", beta=config.beta,
        simpo_gamma=config.simpo_gamma, cpo_alpha=config.cpo_alpha, disable_dropout=True,
        remove_unused_columns=False, trust_remote_code=inputs.trust_remote_code,
    )
    trainer = CPOTrainer(model=load_causal_lm(inputs.parent, inputs), args=args, processing_class=tok,
                         train_dataset=Dataset.from_list([{k: r[k] for k in keys} for r in rows]))
    metrics = run_trainer(trainer, inputs)
    save_checkpoint(trainer.model, tok, out, trainer=trainer)
    last = next((e for e in reversed(metrics["log_history"]) if "rewards/accuracies" in e), {})
    keys = ("rewards/accuracies", "rewards/margins", "nll_loss")
    metrics.update({"final_" + k.replace("/", "_"): last[k] for k in keys if k in last})
    metrics["pairs"] = len(rows)
    metrics.update(trained_tokens(trainer, metrics))
    return metrics


def trained_tokens(trainer: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Tokens trained (prompt + chosen and prompt + rejected of every pair seen): the mean per pair of the
    tokenized data times the pairs seen, as the Trainer cannot count CPO batches (``train_tokens_estimated``)."""
    data = trainer.train_dataset
    per_pass = sum(len(c) + len(r) for c, r in zip(data["chosen_input_ids"], data["rejected_input_ids"], strict=True))
    args = trainer.args
    seen = min(metrics["global_step"] * args.per_device_train_batch_size * args.gradient_accumulation_steps
               * args.world_size, math.ceil(args.num_train_epochs * len(data)) if args.max_steps <= 0 else math.inf)
    tokens = round(per_pass / len(data) * seen)
    return {"train_tokens": tokens, "train_tokens_estimated": True,
            "tokens_per_s": round(tokens / max(metrics["train_runtime_s"], 1e-9), 1)}


STAGE = StageDef(kind="simpo", Config=Config, run=run, version="1", data_key="preferences")
