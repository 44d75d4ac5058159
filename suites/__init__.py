"""Behaviour suites, one file each. Add a suite: write ``suites/<name>.py``, add one line here."""

from harness.registry import Registry

SUITES: Registry = Registry(
    "suite",
    {
    },
)

__all__ = ["SUITES"]
