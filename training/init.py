"""Stage kind ``init``: the starting checkpoint every pipeline grows from.

Two modes, chosen by the config (``harness.core.spec.ModelSpec`` fields, so the pipeline passes
``cfg.model`` straight through):

- ``fresh`` (the default): a randomly initialised tiny ``LlamaForCausalLM`` sized by
  ``FreshModel`` on the tokenizer found at ``inputs.parent`` (the world's ``tokenizer/``
  folder); vocabulary size and bos/eos/pad ids come from that tokenizer; seeded by
  ``inputs.seed``; head_dim = hidden_size / num_heads >= 32.
- ``path``: a user's HF causal LM folder (``inputs.parent`` is that folder): its safetensors
  weights, config and tokenizer files are hard-linked (or copied) into the checkpoint.
  Folders with pickled weights only are refused.

The pipeline calls it like any stage::

    source = Path(cfg.model.path) if cfg.model.path else world_dir / "tokenizer"
    execute("init", "init", cfg.model, StageInputs(parent=source, data=None, seed=cfg.seed,
            trust_remote_code=cfg.model.trust_remote_code), layout)

Its content hash covers the config and a fingerprint of the source folder's files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from harness.core.spec import ModelSpec
from training.stage import StageDef, StageInputs

Config = ModelSpec  # fresh: FreshModel | None, path: str | None, trust_remote_code: bool

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SKIP_NAMES = {"manifest.json", "COMPLETE", "trainer_state", ".git", ".cache"}


def run(config: ModelSpec, inputs: StageInputs, out: Path) -> dict[str, Any]:
    """Writes on the main process only (``execute`` holds the other ranks until the checkpoint is complete)."""
    if config.path is not None:
        return _copy_model(Path(inputs.parent), out)
    return _fresh_model(config, inputs, out)


def _fresh_model(config: ModelSpec, inputs: StageInputs, out: Path) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, set_seed

    from training.process import is_main_process
    from training.runtime import load_tokenizer

    fresh = config.fresh
    assert fresh is not None  # ModelSpec fills it in when `path` is unset
    tok = load_tokenizer(Path(inputs.parent), inputs)
    if tok.eos_token_id is None:
        raise ValueError(f"{inputs.parent}: the tokenizer has no EOS token; a causal LM needs one to stop")
    head_dim = fresh.hidden_size // fresh.num_heads
    model_config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=fresh.hidden_size,
        intermediate_size=fresh.intermediate_size,
        num_hidden_layers=fresh.num_layers,
        num_attention_heads=fresh.num_heads,
        num_key_value_heads=fresh.num_heads,
        head_dim=head_dim,
        max_position_embeddings=fresh.max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    set_seed(inputs.seed)
    model = LlamaForCausalLM(model_config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    if is_main_process():
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
    return {"mode": "fresh", "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tok), "head_dim": head_dim}


def _copy_model(src: Path, out: Path) -> dict[str, Any]:
    if not src.is_dir():
        raise FileNotFoundError(
            f"{src}: model.path must be a local folder holding an HF causal LM (config.json, *.safetensors, "
            "tokenizer files); download it first"
        )
    names = {p.name for p in src.iterdir()}
    if "config.json" not in names:
        raise FileNotFoundError(f"{src}: no config.json; not a Hugging Face model folder")
    if not any(n.endswith(".safetensors") for n in names):
        pickled = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
        raise FileNotFoundError(
            f"{src}: no *.safetensors weights (found {pickled or 'none'}); pickled weights are never loaded. "
            "Convert the model to safetensors first."
        )
    from training.process import is_main_process

    tensors = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] in SKIP_NAMES or path.is_dir() or path.name.endswith(PICKLE_SUFFIXES):
            continue
        if is_main_process():
            _link_or_copy(path, out / rel)
        if path.suffix == ".safetensors":
            tensors += _safetensors_numel(path)
    return {"mode": "path", "source": str(src), "parameters": tensors}


def _link_or_copy(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)


def _safetensors_numel(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt") as fh:
        for name in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
            n = 1
            for dim in fh.get_slice(name).get_shape():
                n *= dim
            total += n
    return total


STAGE = StageDef(kind="init", Config=Config, run=run, version="1", data_key=None)
