"""The embedded default experiment: a deterministic synthetic knowledge world with planted causes.

    from harness.world import preset, generate, load_card
    card = generate(preset("smoke"), Path("/tmp/world"))

See the README section "The synthetic world" for the knobs and the planted causes.
"""

from harness.world.card import WORLD_FILES, WorldCardError, load_card
from harness.world.config import PRESETS, WorldConfig, WorldConfigError, config_from, preset
from harness.world.effects import expected_effects
from harness.world.generate import generate

__all__ = [
    "PRESETS",
    "WORLD_FILES",
    "WorldCardError",
    "WorldConfig",
    "WorldConfigError",
    "config_from",
    "expected_effects",
    "generate",
    "load_card",
    "preset",
]
