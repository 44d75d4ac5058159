"""Links to exact dashboard views: ``BASE/?run=…&page=…&metric=…&stage=…``.

The dashboard (``dashboards/app.py``) reads these query parameters when a link is opened and
writes its state back into them as a visitor clicks, so a view can be pasted into a pull
request or a CI summary. ``harness report --dashboard-url`` and ``harness gate --dashboard-url``
print the links below; nothing here imports Streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from harness.core.store import Store

# The dashboard's pages, in its navigation order (each is dashboards/views/<slug>.py).
PAGES = ("overview", "attribution", "compare", "topics", "reward_hacking", "samples")
TOKENS_METRIC = "verbosity.mean_tokens"  # the effect row that carries a stage's reward-hacking verdict

Link = tuple[str, str]  # (what it shows, URL)


def view_url(base: str, run_id: str | None, page: str = "overview", metric: str | None = None,
             stage: str | None = None) -> str:
    """The URL of one view: `page` of run `run_id`, with `metric` and `stage` selected."""
    if page not in PAGES:
        raise ValueError(f"unknown dashboard page {page!r} (pages: {', '.join(PAGES)})")
    params = {"run": run_id, "page": page, "metric": metric, "stage": stage}
    return base.rstrip("/") + "/?" + urlencode({k: v for k, v in params.items() if v})


def _records(effects: Any) -> list[Mapping[str, Any]]:
    if hasattr(effects, "to_dict"):  # a DataFrame as the store returns it
        return list(effects.to_dict("records"))
    return list(effects or [])


def flagged_stages(effects: Any) -> list[str]:
    """Stages whose stored verbosity effect carries a reward-hacking flag."""
    out = []
    for r in _records(effects):
        flag = (r.get("details") or {}).get("reward_hacking") if r.get("metric") == TOKENS_METRIC else None
        if isinstance(flag, Mapping) and flag.get("flagged") and r.get("stage") not in out:
            out.append(str(r["stage"]))
    return out


def report_links(base: str, run_id: str, effects: Any) -> list[Link]:
    """The run's overview, the Attribution view and the Samples flips of every attributed
    headline effect, and the Reward hacking view of every flagged stage."""
    links: list[Link] = [("run overview", view_url(base, run_id))]
    for r in _records(effects):
        if r.get("attributed") and (r.get("family") or "headline") == "headline":
            stage, metric = str(r["stage"]), str(r["metric"])
            links.append((f"{stage}: {metric} (attribution)", view_url(base, run_id, "attribution", metric, stage)))
            links.append((f"{stage}: {metric} (samples that flipped)", view_url(base, run_id, "samples", metric, stage)))
    links += [(f"{stage}: flagged for reward hacking", view_url(base, run_id, "reward_hacking", stage=stage))
              for stage in flagged_stages(effects)]
    return links


def gate_links(base: str, run_id: str | None, candidate: str, rules: Iterable[tuple[str, str]],
               effects: Any = None) -> list[Link]:
    """Links for a gate: each rule's metric (`rules` as (metric, verdict)) at the candidate in
    Attribution and Samples, failures first, and Reward hacking when the candidate is flagged."""
    links: list[Link] = [("run overview", view_url(base, run_id))]
    order = {"error": 0, "fail": 1, "inconclusive": 2, "warn": 3, "pass": 4}
    seen: set[str] = set()
    for metric, verdict in sorted(rules, key=lambda mv: order.get(mv[1], 5)):
        if metric in seen:
            continue
        seen.add(metric)
        links.append((f"{candidate}: {metric} ({verdict}, attribution)",
                      view_url(base, run_id, "attribution", metric, candidate)))
        links.append((f"{candidate}: {metric} ({verdict}, samples)", view_url(base, run_id, "samples", metric, candidate)))
    if candidate in flagged_stages(effects):
        links.append((f"{candidate}: flagged for reward hacking", view_url(base, run_id, "reward_hacking",
                                                                            stage=candidate)))
    return links


def gate_summary_links(base: str, store_path: Path | str, report: Any) -> str:
    """The gate summary's Markdown section of dashboard links for a `harness.gate_render.GateReport`
    (the candidate's stored effects say whether it is flagged for reward hacking)."""
    with Store(store_path, readonly=True) as store:
        effects = store.effects(report.run_id) if report.run_id else None
    rules = [(r.metric, r.verdict) for r in report.results]
    return markdown_links(gate_links(base, report.run_id, report.candidate, rules, effects))


def markdown_links(links: list[Link], title: str = "## Dashboard views") -> str:
    """A Markdown section listing `links` (empty text when there are none)."""
    if not links:
        return ""
    return "\n".join([title, "", *(f"- [{label}]({url})" for label, url in links)]) + "\n"
