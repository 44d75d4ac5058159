"""Scoring text with a reward-model checkpoint.

A reward model is an ``AutoModelForSequenceClassification`` with one label, as TRL's
``RewardTrainer`` writes it. Its score for a (prompt, response) pair is the head's output at
the **last real token** of the pair rendered exactly as ``RewardTrainer`` tokenized it:

- a chat prompt (a list of messages) becomes ``prompt + [{"role": "assistant", "content": response}]``
  rendered with the tokenizer's chat template (``tokenize=True``, no generation prompt);
- a plain-text prompt becomes ``prompt + response`` with EOS appended if missing.

Sequences are right-padded and the score is gathered from the last position whose attention
mask is 1, so the result does not depend on the pad token id (nor on it differing from EOS).

Used by ``training/ppo.py`` and by the verbosity suite, so neither imports the other.
The tensor-level helpers (:func:`token_scores`, :func:`sequence_scores`) run the model's
backbone and its ``score`` head on token ids a caller already has; PPO uses
:func:`token_scores` for its per-token value model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.artifacts import MANIFEST, fingerprint_paths, read_manifest

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch

log = logging.getLogger(__name__)

Prompt = str | list[dict[str, Any]]
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def require_safetensors(ckpt_dir: Path) -> None:
    """Refuse checkpoints without safetensors weights: nothing is ever loaded through pickle."""
    if not any((Path(ckpt_dir) / name).is_file() for name in WEIGHT_FILES):
        found = sorted(p.name for p in Path(ckpt_dir).glob("*")) if Path(ckpt_dir).is_dir() else []
        raise FileNotFoundError(
            f"{ckpt_dir}: no safetensors weights ({' or '.join(WEIGHT_FILES)}); found {found or 'nothing'}. "
            "Checkpoints must be saved with safetensors; pickled weights are never loaded."
        )


def score_head(model: Any) -> Any:
    """The linear head of a sequence-classification model (``score`` for Llama/Qwen/Mistral-style models)."""
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    raise TypeError(f"{type(model).__name__} has no `score` (or `classifier`) head; not a reward model")


def backbone(model: Any) -> Any:
    """The transformer body of a sequence-classification model (``model.model`` for Llama)."""
    return getattr(model, model.base_model_prefix)


def token_scores(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The head's scalar output at every position, shape ``[batch, seq]``.

    Works for left- or right-padded inputs; pass ``position_ids`` for left padding
    (``cumsum(mask) - 1``) so positions match what the model saw in training.
    """
    out = backbone(model)(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    return score_head(model)(out.last_hidden_state).squeeze(-1)


def sequence_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Score of each right-padded sequence, read at its last real token, shape ``[batch]`` (float32)."""
    import torch

    scores = token_scores(model, input_ids, attention_mask)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.long()).argmax(dim=1)
    return scores[torch.arange(scores.shape[0], device=scores.device), last].float()


def right_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of the rows right-padded to the longest."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


class RewardScorer:
    """A frozen reward model plus its tokenizer: ``score(prompts, responses) -> list[float]``."""

    def __init__(
        self,
        ckpt_dir: str | Path,
        device: Any = None,
        batch_size: int = 32,
        trust_remote_code: bool = False,
        dtype: Any = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.ckpt_dir = Path(ckpt_dir)
        require_safetensors(self.ckpt_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(self.ckpt_dir, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.ckpt_dir, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype
        ).to(self.device)
        if self.model.config.num_labels != 1:
            raise ValueError(f"{self.ckpt_dir}: a reward model has num_labels=1, this one has {self.model.config.num_labels}")
        self.model.eval().requires_grad_(False)
        self.pad_id = next(
            i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0) if i is not None
        )
        self.max_length: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self._hash: str | None = None

    @property
    def content_hash(self) -> str:
        """The checkpoint's content hash from its manifest, else a fingerprint of its files."""
        if self._hash is None:
            if (self.ckpt_dir / MANIFEST).is_file():
                self._hash = read_manifest(self.ckpt_dir).content_hash
            else:
                self._hash = fingerprint_paths([self.ckpt_dir])
        return self._hash

    # ------------------------------------------------------------------ tokenization

    def encode(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[list[int]]:
        """Token ids of each pair, rendered as TRL's RewardTrainer rendered chosen/rejected."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rows: list[list[int]] = []
        eos = self.tokenizer.eos_token or ""
        for prompt, response in zip(prompts, responses, strict=True):
            if isinstance(prompt, str):
                text = prompt + response
                ids = self.tokenizer(text if text.endswith(eos) else text + eos)["input_ids"]
            else:
                conversation = [*prompt, {"role": "assistant", "content": response}]
                ids = self.tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
            ids = list(ids)
            if self.max_length and len(ids) > self.max_length:  # keep the end: the score is read there
                ids = ids[-self.max_length :]
            rows.append(ids)
        return rows

    # ------------------------------------------------------------------ scoring

    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores of right-padded token ids already on any device; returns float32 ``[batch]`` on that device."""
        import torch

        with torch.no_grad():
            out = sequence_scores(self.model, input_ids.to(self.device), attention_mask.to(self.device))
        return out.to(input_ids.device)

    def score_rows(self, rows: Sequence[Sequence[int]]) -> list[float]:
        """Scores of token-id rows, batched (longest first to limit padding), in the input order."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        out = [0.0] * len(rows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            ids, mask = right_pad([rows[i] for i in chunk], self.pad_id, self.device)
            for i, s in zip(chunk, self.score_ids(ids, mask).tolist(), strict=True):
                out[i] = float(s)
        return out

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """The reward model's score of each (prompt, response) pair."""
        if not prompts:
            return []
        return self.score_rows(self.encode(prompts, responses))
