"""The world tokenizer: byte-level BPE trained on the world's training text, with a chat template.

Conventions (the Llama ones): `tokenizer(text)` prepends `<|bos|>` and adds nothing at the
end; the chat template writes `<|bos|>` itself, and `apply_chat_template(..., tokenize=True)`
tokenizes without adding special tokens, so there is exactly one. A rendered chat is

    <|bos|><|user|>\\n{content}<|end|>\\n<|assistant|>\\n{content}<|end|>\\n

with each assistant turn's content and its `<|end|>` inside `{% generation %}` markers, so
TRL's `assistant_only_loss=True` trains the model to stop. `<|end|>` is the EOS token and
`<|pad|>` (a different token) pads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

if TYPE_CHECKING:  # transformers is imported when a tokenizer is built, not when the world package is
    from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (BOS, EOS, PAD, *ROLE_TOKENS)
MODEL_MAX_LENGTH = 512

# Written with Jinja string literals for the newlines: transformers renders templates with
# trim_blocks, which would eat a newline written right after a block tag.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role'] + '; expected system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}{{ '<|end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ message['content'] }}{{ '<|end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a transformers tokenizer with the chat template."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=MODEL_MAX_LENGTH,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def count_tokens(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[int]:
    """Tokens per text, without special tokens (fast: the Rust tokenizer, batched)."""
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    return [len(e.ids) for e in encodings]


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: Path) -> list[Path]:
    """Save in the Hugging Face layout (loadable by `AutoTokenizer.from_pretrained`); returns the files written."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))
    return sorted(p for p in path.rglob("*") if p.is_file())
