"""The world's knowledge items as lm-evaluation-harness tasks (YAML + local JSONL data).

``write_world_tasks(world_dir, out_dir)`` reads the world's cloze items
(``eval/topic_coverage.jsonl``) and writes, into ``out_dir``:

- ``data/world_knowledge_<topic>.jsonl``: that topic's items (``id``, ``prompt``, ``choices``,
  ``answer_index``, ``topic``), in file order — derived from the item file, never edited by hand;
- ``world_knowledge_<topic>.yaml``: one ``multiple_choice`` task per topic (``doc_to_text:
  prompt``, ``doc_to_choice: choices``, ``doc_to_target: answer_index``: the columns), scored by
  log-likelihood (``acc``: the summed log-probability of each choice picks the answer, exactly
  the harness's ``topic_coverage.accuracy``), with an *absolute* ``data_files`` path (relative
  ones would resolve against the working directory of whoever runs lm-eval);
- ``world_knowledge.yaml``: the group of all topic tasks, ``acc`` aggregated over all items
  (``weight_by_size: true``).

The world's choices already carry their leading space (``" Paris"``), so ``target_delimiter``
is ``""``: lm-eval then asks for exactly the ``(prompt, choice)`` pairs the harness asks for.
Output is deterministic (sorted topics, fixed key order); files an earlier call wrote for
topics that no longer exist are removed. Use the tasks in any lm-eval workflow::

    lm_eval --model hf --model_args pretrained=CKPT --include_path OUT --tasks world_knowledge
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.core.artifacts import write_text_atomic

GROUP = "world_knowledge"
TASK_VERSION = 1.0  # bump when the task layout (prompt, choices, metrics) changes
ITEM_FIELDS = ("id", "prompt", "choices", "answer_index", "topic")


def task_name(topic: str) -> str:
    """``world_knowledge_<topic>``, the topic lower-cased with anything but ``[a-z0-9_]`` as ``_``."""
    slug = re.sub(r"[^a-z0-9_]+", "_", str(topic).lower()).strip("_")
    if not slug:
        raise ValueError(f"topic {topic!r} gives an empty task name")
    return f"{GROUP}_{slug}"


def is_world_task(name: str) -> bool:
    """Whether ``name`` is the world group or one of its topic tasks (written from items, not found on disk)."""
    return name == GROUP or name.startswith(f"{GROUP}_")


def task_config(name: str, data_file: Path) -> dict[str, Any]:
    """The lm-eval YAML config of one topic task reading ``data_file`` (made absolute)."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        # column names, read as-is: same as "{{prompt}}" / "{{choices}}" / "{{answer_index}}" without
        # compiling a Jinja template per document (0.4 s per 50 items) or literal_eval of the choices
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "answer_index",
        "target_delimiter": "",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": TASK_VERSION},
    }


def group_config(tasks: Sequence[str]) -> dict[str, Any]:
    return {
        "group": GROUP,
        "task": list(tasks),
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
        "metadata": {"version": TASK_VERSION},
    }


def _dump_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)


def write_tasks(items: Sequence[dict[str, Any]], out_dir: Path | str) -> list[str]:
    """Write the topic tasks and the group for cloze ``items`` (``prompt``, ``choices``,
    ``answer_index``, ``topic``) into ``out_dir``; returns the task names, group first."""
    out_dir = Path(out_dir).resolve()
    by_task: dict[str, list[dict[str, Any]]] = {}
    topic_of: dict[str, str] = {}
    for item in items:
        missing = [f for f in ITEM_FIELDS if f not in item]
        if missing:
            raise ValueError(f"item {item.get('id', '?')!r}: lm-eval tasks need {', '.join(missing)}")
        name = task_name(item["topic"])
        if topic_of.setdefault(name, str(item["topic"])) != str(item["topic"]):
            raise ValueError(f"topics {topic_of[name]!r} and {item['topic']!r} both map to task {name!r}")
        by_task.setdefault(name, []).append({f: item[f] for f in ITEM_FIELDS})
    if not by_task:
        raise ValueError("no items to write lm-eval tasks from")
    names = sorted(by_task)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob(f"{GROUP}_*.yaml"), *data_dir.glob(f"{GROUP}_*.jsonl")]:
        if stale.stem not in by_task:
            stale.unlink()
    for name in names:
        data_file = data_dir / f"{name}.jsonl"
        rows = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in by_task[name])
        write_text_atomic(data_file, rows)
        write_text_atomic(out_dir / f"{name}.yaml", _dump_yaml(task_config(name, data_file)))
    write_text_atomic(out_dir / f"{GROUP}.yaml", _dump_yaml(group_config(names)))
    return [GROUP, *names]


def write_world_tasks(world_dir: Path, out_dir: Path) -> list[str]:
    """Write the world's topic-coverage items (``<world_dir>/eval/topic_coverage.jsonl``) as lm-eval
    tasks into ``out_dir`` (see the module doc); returns the task names, the group first."""
    from harness.world import WORLD_FILES
    from suites.topic_coverage import SUITE as TOPIC_COVERAGE

    path = Path(world_dir) / WORLD_FILES["eval/topic_coverage"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no topic-coverage items (generate the world first: `harness world`)")
    return write_tasks(TOPIC_COVERAGE.load_items(path), out_dir)
