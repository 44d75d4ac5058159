"""Inference backends. Add one: write ``harness/backends/<name>.py``, add one line here."""

from harness.core.registry import Registry

BACKENDS: Registry = Registry(
    "backend",
    {
        "hf": "harness.backends.hf:HFBackend",
        "vllm": "harness.backends.vllm:VLLMBackend",
    },
)

__all__ = ["BACKENDS"]
