"""Capabilities: lm-evaluation-harness tasks on the checkpoint (the "alignment tax").

Runs ``lm_eval.simple_evaluate`` through :class:`suites.lm_eval_adapter.BackendLM`, which asks
the backend the harness already has open (hf or vLLM; no second model load), and turns lm-eval's
results into harness metrics and per-item samples, so attribution, gate and dashboard treat
them like any other suite's.

Items (JSONL): the world's cloze items (``eval/topic_coverage.jsonl``: ``id``, ``prompt``,
``choices``, ``answer_index``, ``topic``). When the configured tasks include the world's tasks
(the default), they are written from exactly these items (after ``max_items``) as lm-eval task
YAMLs (:mod:`suites.lm_eval_tasks`: one ``multiple_choice`` task per topic, group
``world_knowledge``) into a temporary folder for the run.

Options:

- ``tasks``: lm-eval task, group or tag names (default ``["world_knowledge"]``); the world's
  ``world_knowledge`` / ``world_knowledge_<topic>`` names are written from the items; others come
  from ``include_path`` or, only when a name is found nowhere else, lm-eval's ~14.7k built-in
  tasks (indexing them costs 8–30 s);
- ``include_path``: a folder (or list) of task YAMLs (``data_files`` should be absolute paths);
- ``limit``: documents per task (an int, or a fraction < 1), lm-eval's ``--limit``;
- ``num_fewshot``: lm-eval's ``--num_fewshot`` (tasks whose YAML fixes 0 keep 0);
- ``bootstrap_iters``: lm-eval's bootstrap for non-mean metrics' stderr (mean metrics use the
  analytic stderr; 0 turns every stderr off, and with it the intervals);
- ``offline`` (default true): run with ``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``; a task
  whose dataset is not local fails with a message naming it. Set false to let lm-eval download.

Metrics (names ``capabilities.<metric>`` and ``capabilities.<metric>[<task or group>]``, metric
as lm-eval names it, with ``_<filter>`` appended for filters other than ``none``): each task's
value, ``n`` (documents evaluated) and a 95% interval ``value ± 1.96·stderr`` from lm-eval's
stderr (not clipped to [0, 1], so the stderr can be recovered exactly; NaN where lm-eval gives
none, e.g. one document), direction from lm-eval's ``higher_is_better``.
The headline ``capabilities.<metric>`` is the aggregate of the one configured group when
exactly one group was asked for (lm-eval's own number, e.g. ``world_knowledge``'s ``acc`` over
all its items); otherwise the mean over all documents of all tasks (or, for metrics without
per-document values, the mean over tasks). Groups inside the configured ones are breakdowns.

Samples: one per document (``item_id``: the item's ``id`` for world tasks, else
``<task>:<doc_id>``), response = the chosen continuation (multiple choice) or the generated
text; outcomes ``capabilities.<metric>`` and ``capabilities.<metric>[<task>]`` (and
``[<group>]``) for every metric lm-eval aggregates by mean, so parent and child checkpoints
pair item by item.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Backend
from suites.items import Item, check_choice, check_cloze, item_hash, load_items, require
from suites.lm_eval_run import run_lm_eval, world_tasks_dir
from suites.lm_eval_tasks import GROUP, is_world_task
from suites.suite import NON_LM_KINDS, Metric, MetricDef, Sample, SuiteContext, SuiteResult, suite_options

log = logging.getLogger(__name__)

NAME = "capabilities"
Z95 = 1.959963984540054
DEFAULTS: dict[str, Any] = {"tasks": None, "include_path": None, "limit": None, "num_fewshot": None,
                            "bootstrap_iters": 1000, "offline": True}
NOT_METRICS = frozenset({"alias", "name", "sample_len", "sample_count", "samples"})

# lm-eval's common metrics: (higher_is_better, per-document outcome kind, what it is). Metrics of
# other tasks are declared when a run first reports them, with lm-eval's direction.
KNOWN_METRICS: dict[str, tuple[bool, str | None, str]] = {
    "acc": (True, "binary", "Accuracy (multiple choice: the choice with the highest summed log-probability)."),
    "acc_norm": (True, "binary", "Accuracy with log-probabilities normalised by the choices' byte length."),
    "acc_mutual_info": (True, "binary", "Accuracy by mutual information with the unconditional choice."),
    "acc_bytes": (True, "binary", "Accuracy with byte-length normalisation."),
    "exact_match": (True, "binary", "Generated answer equals the reference (after the task's filters)."),
    "likelihood": (True, "continuous", "Probability of the correct choice."),
    "mc1": (True, "binary", "TruthfulQA MC1: the single true answer ranked first."),
    "mc2": (True, "continuous", "TruthfulQA MC2: normalised probability mass on true answers."),
    "prompt_level_strict_acc": (True, "binary", "IFEval: every instruction of the prompt followed (strict)."),
    "prompt_level_loose_acc": (True, "binary", "IFEval: every instruction of the prompt followed (loose)."),
    "inst_level_strict_acc": (True, None, "IFEval: share of instructions followed (strict)."),
    "inst_level_loose_acc": (True, None, "IFEval: share of instructions followed (loose)."),
    "perplexity": (False, None, "Perplexity of the reference continuation."),
    "word_perplexity": (False, None, "Perplexity per word of the documents."),
    "byte_perplexity": (False, None, "Perplexity per byte of the documents."),
    "bits_per_byte": (False, None, "Bits per byte of the documents."),
    "f1": (True, None, "F1 over the documents."),
    "mcc": (True, None, "Matthews correlation over the documents."),
    "bleu": (True, None, "BLEU over the documents."),
    "chrf": (True, None, "chrF over the documents."),
    "ter": (False, None, "Translation error rate over the documents."),
    "brier_score": (False, None, "Brier score of the choice probabilities."),
}


def _check(path: Path, item: Item) -> None:
    if "format" in item:
        check_choice(path, item, "format", ("cloze",))
    check_cloze(path, item)
    require(path, item, "topic")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", str(text).lower()).strip("_")


def metric_base(metric: str, filter_name: str) -> str:
    """The harness metric name (after ``capabilities.``) of lm-eval's ``metric,filter``."""
    base = _slug(metric)
    return base if filter_name == "none" else f"{base}_{_slug(filter_name)}"


def _group_label(name: str) -> str:
    return str(name).replace("[", "(").replace("]", ")")


def _number(value: Any) -> float | None:
    """A finite float from lm-eval's value (numpy scalars, bools), else None ("N/A", lists, NaN)."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return None


# --------------------------------------------------------------------------- normalising


def _leaves(group: str, subtasks: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for child in subtasks.get(group, []):
        out.extend(_leaves(child, subtasks) if child in subtasks else [child])
    return out


def _aggregation(config: dict[str, Any], metric: str) -> str | None:
    """How lm-eval aggregates ``metric`` over a task's documents (``mean``, ``perplexity``, ...)."""
    for entry in config.get("metric_list") or []:
        if entry.get("metric") == metric:
            agg = entry.get("aggregation")
            if agg is not None:
                return agg if isinstance(agg, str) else getattr(agg, "__name__", str(agg))
    try:
        from lm_eval.api.registry import get_metric_aggregation

        fn = get_metric_aggregation(metric)
    except Exception:  # noqa: BLE001 - unknown metric: no per-document outcome
        return None
    return getattr(fn, "__name__", None)


def _interval(value: float, stderr: float | None) -> tuple[float, float]:
    """``value ± 1.96·stderr``, not clipped (even for accuracies): lm-eval's stderr stays exactly
    recoverable as ``(high - low) / 3.92``, which the lm-eval-shaped export relies on."""
    if stderr is None:
        return math.nan, math.nan
    return value - Z95 * stderr, value + Z95 * stderr


def _response(output_type: str, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The sample's response text and diagnostics from one lm-eval sample log entry."""
    resps = entry.get("filtered_resps") or []
    if output_type == "multiple_choice" and resps:
        logprobs = [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in resps]
        pred = int(np.argmax(logprobs))
        args = entry.get("arguments") or []
        text = str(args[pred][1]) if pred < len(args) and len(args[pred]) > 1 else str(pred)
        return text, {"pred": pred, "logprobs": [round(x, 6) for x in logprobs]}
    if output_type == "generate_until" and resps:
        return str(resps[0]), {}
    return str(resps[0] if len(resps) == 1 else resps), {}


class CapabilitiesSuite:
    name = NAME
    version = "1"
    uses_judge = False

    def __init__(self) -> None:
        self._found: dict[str, MetricDef] = {}  # metrics first seen in a run, with lm-eval's direction

    @property
    def metrics(self) -> tuple[MetricDef, ...]:
        known = {f"{NAME}.{m}": MetricDef(f"{NAME}.{m}", hib, kind, desc)  # type: ignore[arg-type]
                 for m, (hib, kind, desc) in KNOWN_METRICS.items()}
        return tuple({**known, **self._found}.values())

    def applies_to(self, kind: str, has_chat_template: bool = False) -> bool:
        return kind not in NON_LM_KINDS

    def load_items(self, path: Path | str) -> list[Item]:
        return load_items(path, _check)

    def run(self, backend: Backend, items: list[Item], spec: Any, ctx: SuiteContext) -> SuiteResult:
        opts = suite_options(spec, DEFAULTS)
        tasks = opts["tasks"] or [GROUP]
        tasks = [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
        include = opts["include_path"] or []
        include = [include] if isinstance(include, (str, Path)) else list(include)
        include = [Path(p).expanduser().resolve() for p in include]
        for p in include:
            if not p.exists():
                raise ValueError(f"suite {NAME!r}: include_path {p} does not exist")
        start = time.perf_counter()
        if any(is_world_task(t) for t in tasks):
            if not items:
                raise ValueError(f"suite {NAME!r}: the world tasks need cloze items (none given)")
            include = [world_tasks_dir(items), *include]
        raw = run_lm_eval(backend, tasks, include, limit=opts["limit"], num_fewshot=opts["num_fewshot"],
                          bootstrap_iters=int(opts["bootstrap_iters"]), offline=bool(opts["offline"]),
                          seed=ctx.sampling.seed)
        metrics, samples, notes = self.normalise(raw, tasks, items)
        notes.append(f"lm-eval {raw.get('lm_eval_version', '?')}: tasks {', '.join(tasks)} "
                     f"in {time.perf_counter() - start:.1f}s")
        return SuiteResult(NAME, self.version, metrics, samples, notes=notes)

    # ------------------------------------------------------------------ lm-eval results -> harness

    def normalise(
        self, raw: dict[str, Any], requested: Sequence[str], items: Sequence[Item] = ()
    ) -> tuple[list[Metric], list[Sample], list[str]]:
        """Harness metrics, samples and notes from lm-eval's results dict (with ``samples``)."""
        results: dict[str, dict[str, Any]] = raw.get("results") or {}
        subtasks: dict[str, list[str]] = raw.get("group_subtasks") or {}
        configs: dict[str, dict[str, Any]] = raw.get("configs") or {}
        higher: dict[str, dict[str, Any]] = raw.get("higher_is_better") or {}
        n_samples: dict[str, dict[str, Any]] = raw.get("n-samples") or {}
        logged: dict[str, list[dict[str, Any]]] = raw.get("samples") or {}
        leaves = [t for t in results if t not in subtasks]
        groups = [g for g in subtasks if g in results]
        requested_groups = [g for g in requested if g in subtasks]
        headline_group = requested_groups[0] if len(requested) == 1 and len(requested_groups) == 1 else None
        member_of: dict[str, list[str]] = {t: [] for t in leaves}
        for g in groups:
            if g == headline_group:
                continue
            for t in _leaves(g, subtasks):
                member_of.setdefault(t, []).append(g)
        notes: list[str] = []

        # per-document outcomes
        by_id = {str(i["id"]): i for i in items}
        samples: list[Sample] = []
        outcome_values: dict[str, list[float]] = {}
        for task in leaves:
            config = configs.get(task, {})
            output_type = str(config.get("output_type", ""))
            docs: dict[int, Sample] = {}
            for entry in logged.get(task, []):
                doc_id = int(entry["doc_id"])
                doc = entry.get("doc") or {}
                sample = docs.get(doc_id)
                if sample is None:
                    item = by_id.get(str(doc.get("id"))) if is_world_task(task) else None
                    response, diag = _response(output_type, entry)
                    if item is not None:
                        sample = Sample(str(item["id"]), item_hash(item), 0, str(item["prompt"]), response, {})
                    else:
                        args = entry.get("arguments") or [[""]]
                        sample = Sample(f"{task}:{doc_id}", str(entry.get("doc_hash") or ""), 0,
                                        str(args[0][0]) if args and args[0] else "", response, {})
                    sample.outcome.update({"task": task, "doc_id": doc_id, **diag})
                    docs[doc_id] = sample
                    samples.append(sample)
                for metric in entry.get("metrics") or []:
                    value = _number(entry.get(metric))
                    if value is None or _aggregation(config, metric) != "mean":
                        continue
                    base = metric_base(metric, str(entry.get("filter", "none")))
                    for key in (f"{NAME}.{base}", f"{NAME}.{base}[{_group_label(task)}]",
                                *(f"{NAME}.{base}[{_group_label(g)}]" for g in member_of.get(task, []))):
                        sample.outcome[key] = value
                        outcome_values.setdefault(key, []).append(value)

        def outcome_kind(key: str) -> str | None:
            values = outcome_values.get(key)
            if not values:
                return None
            return "binary" if all(v in (0.0, 1.0) for v in values) else "continuous"

        # metrics
        metrics: list[Metric] = []
        directions: dict[str, bool] = {}

        def add(base: str, label: str | None, value: float, stderr: float | None, n: int, hib: bool) -> None:
            key = f"{NAME}.{base}" + (f"[{_group_label(label)}]" if label is not None else "")
            kind = outcome_kind(key)
            values = outcome_values.get(key) or []
            if stderr is None and len(values) > 1:  # lm-eval gives none (a subtask of one document; no bootstrap)
                stderr = float(np.std(values, ddof=1) / math.sqrt(len(values)))
                notes.append(f"{key}: stderr from the {len(values)} per-document values (lm-eval gave none)")
            low, high = _interval(value, stderr)
            metrics.append(Metric(key, value, low, high, n, hib, "breakdown" if label else "headline", kind))  # type: ignore[arg-type]
            directions.setdefault(base, hib)

        def task_n(task: str) -> int:
            counts = n_samples.get(task) or {}
            return int(counts.get("effective", counts.get("original", 0)) or 0)

        headline_inputs: dict[str, list[tuple[float, float | None, int]]] = {}
        for task in [*leaves, *groups]:
            row = results.get(task, {})
            n = task_n(task) if task in leaves else sum(task_n(t) for t in _leaves(task, subtasks))
            for key, raw_value in sorted(row.items()):
                if key in NOT_METRICS or "," not in key or "_stderr," in key:
                    continue
                metric, filter_name = key.split(",", 1)
                value = _number(raw_value)
                if value is None:
                    continue
                stderr = _number(row.get(f"{metric}_stderr,{filter_name}"))
                base = metric_base(metric, filter_name)
                hib = higher.get(task, {}).get(metric)
                hib = bool(KNOWN_METRICS.get(metric, (True,))[0] if hib is None else hib)
                if task == headline_group:
                    add(base, None, value, stderr, n, hib)
                    continue
                add(base, task, value, stderr, n, hib)
                if task in leaves:
                    headline_inputs.setdefault(base, []).append((value, stderr, n))
        if headline_group is None:
            for base, per_task in headline_inputs.items():
                key = f"{NAME}.{base}"
                values = outcome_values.get(key)
                if values:  # the mean over all documents, its stderr from them
                    stderr = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
                    add(base, None, float(np.mean(values)), stderr, len(values), directions[base])
                else:
                    vals = [v for v, _, _ in per_task]
                    errs = [s for _, s, _ in per_task]
                    stderr = (math.sqrt(sum(s * s for s in errs)) / len(errs)  # type: ignore[operator]
                              if all(s is not None for s in errs) else None)
                    add(base, None, float(np.mean(vals)), stderr, sum(n for _, _, n in per_task), directions[base])
                    notes.append(f"{key}: mean over {len(vals)} task(s) (lm-eval gives no per-document values)")
        else:
            notes.append(f"headline metrics are lm-eval's aggregate of group {headline_group!r}")
        headlines = {m.name for m in metrics if m.family == "headline"}
        for base in directions:
            if f"{NAME}.{base}" not in headlines:
                notes.append(f"{NAME}.{base}: no headline (the group does not aggregate it); see its breakdowns")
        self._declare(directions)
        metrics.sort(key=lambda m: (m.family != "headline", m.name))
        return metrics, samples, notes

    def _declare(self, directions: dict[str, bool]) -> None:
        declared = {d.name: d for d in self.metrics}
        for base, hib in directions.items():
            name = f"{NAME}.{base}"
            known = declared.get(name)
            if known is None or known.higher_is_better != hib:
                root = max((m for m in KNOWN_METRICS if base == m or base.startswith(f"{m}_")), key=len, default=None)
                desc = known.description if known else f"lm-eval metric {base} (as the task defines it)."
                kind = known.outcome if known else (KNOWN_METRICS[root][1] if root else None)
                self._found[name] = MetricDef(name, hib, kind, desc)  # type: ignore[arg-type]


SUITE = CapabilitiesSuite()
