"""Which topic gets which share of the pretraining corpus: the knob `share_assignment`.

`topics` writes a share next to every topic; `share_assignment` permutes those shares over
the topics, so the same set of shares can be tried on other topics without rewriting the
list (the check that a topic's share, not the topic, decides how well it is learned):

- ``default``: every topic keeps the share written next to it;
- ``reverse``: the i-th topic takes the share written for the (n-1-i)-th (the rarest topic
  becomes the most frequent);
- ``shuffle:<seed>``: a fixed random permutation (``shuffle:1``, ``shuffle:2``, ...);
- a mapping ``{topic: other_topic}``: ``topic`` takes the share written for ``other_topic``;
  topics not named keep their own; the named topics must be a permutation of each other.

Only the pretraining corpus depends on it: entity names, facts, the tokenizer, the SFT,
preference and RL data and every evaluation item are the same for every assignment.
"""

from __future__ import annotations

import random
import re
from typing import Any

NAMED = ("default", "reverse")
SHUFFLE = re.compile(r"shuffle:(-?\d+)")
ASSIGNMENT_HELP = "'default', 'reverse', 'shuffle:<seed>' (e.g. 'shuffle:1') or a mapping {topic: topic whose share it takes}"


def assign_shares(written: dict[str, float], assignment: Any) -> dict[str, float]:
    """The share each topic gets, in the order of `written` (topic -> share written next to it).

    Raises ValueError naming `share_assignment` and what was expected.
    """
    names = list(written)
    if isinstance(assignment, str):
        if assignment == "default":
            return dict(written)
        if assignment == "reverse":
            return dict(zip(names, reversed(list(written.values())), strict=True))
        match = SHUFFLE.fullmatch(assignment.strip())
        if match:
            shares = list(written.values())
            random.Random(f"share_assignment:{int(match.group(1))}").shuffle(shares)
            return dict(zip(names, shares, strict=True))
        raise ValueError(f"share_assignment: unknown assignment {assignment!r}; expected {ASSIGNMENT_HELP}")
    if isinstance(assignment, dict):
        mapping = {str(k): str(v) for k, v in assignment.items()}
        unknown = sorted({*mapping, *mapping.values()} - set(names))
        if unknown:
            raise ValueError(f"share_assignment: {', '.join(map(repr, unknown))} not among this world's topics "
                             f"({', '.join(names)})")
        givers = list(mapping.values())
        twice = sorted({g for g in givers if givers.count(g) > 1})
        if twice:
            raise ValueError(f"share_assignment: the share of {', '.join(map(repr, twice))} is given to more than one "
                             "topic; the mapping must be a permutation")
        if set(givers) != set(mapping):
            lost = sorted(set(mapping) - set(givers))
            kept = sorted(set(givers) - set(mapping))
            raise ValueError(
                "share_assignment: the mapping must be a permutation of the topics it names: the share of "
                f"{', '.join(map(repr, lost))} goes to no topic, and that of {', '.join(map(repr, kept))} to two "
                "(a topic the mapping does not name keeps its own); e.g. {villages: herbs, herbs: villages}"
            )
        return {name: written[mapping.get(name, name)] for name in names}
    raise ValueError(f"share_assignment: expected {ASSIGNMENT_HELP}, got {type(assignment).__name__}")
