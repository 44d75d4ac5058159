"""Behaviour suites, one file each. Add a suite: write ``suites/<name>.py``, add one line here."""

from harness.core.registry import Registry

SUITES: Registry = Registry(
    "suite",
    {
        "hallucination": "suites.hallucination:SUITE",
        "refusal": "suites.refusal:SUITE",
        "verbosity": "suites.verbosity:SUITE",
        "topic_coverage": "suites.topic_coverage:SUITE",
        "capabilities": "suites.capabilities:SUITE",
        "truthfulqa": "suites.truthfulqa:SUITE",
    },
)

__all__ = ["SUITES"]
