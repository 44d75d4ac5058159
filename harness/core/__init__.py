"""The core every other layer builds on: config schema, artifacts (paths, manifests, hashes),
registry, results store, statistics and the reward-model scorer.

Nothing here imports a stage (``training/``), a suite (``suites/``), the orchestration
(``harness/*.py``) or the dashboards; ``tests/test_layers.py`` enforces it.
"""
