"""Inference backends. Add one: write ``harness/backends/<name>.py``, add one line here."""

from harness.registry import Registry

BACKENDS: Registry = Registry(
    "backend",
    {
    },
)

__all__ = ["BACKENDS"]
