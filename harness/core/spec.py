"""The pipeline configuration's schema: pydantic models and the stage graph's own checks.

This is the core's half of the config: the shape of every field (``extra="forbid"``
everywhere, wrong types) and the stage graph's own checks (unknown parent, cycle, duplicate
name). What needs the registries -- stage kinds and their ``Config`` models, suites,
backends, world knobs -- is checked by :mod:`harness.config` (orchestration), which is what
``load_config`` callers use. Errors are one :class:`ConfigError` whose lines read
``FILE: key.path: what was expected``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.core.config_errors import ConfigError, format_errors, loc_path, parse_yaml, pydantic_msg

INIT = "init"  # the name of the starting checkpoint (fresh model or the given base model)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- model


class FreshModel(Strict):
    """A fresh, randomly initialised tiny Llama sized for the world (head_dim = hidden/heads >= 32)."""

    hidden_size: int = Field(128, ge=32, description="Width of the residual stream.")
    num_layers: int = Field(4, ge=1, description="Number of transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads; hidden_size / num_heads must be >= 32 (vLLM CPU).")
    intermediate_size: int = Field(384, ge=8, description="Width of the MLP.")
    max_position_embeddings: int = Field(256, ge=16, description="Longest sequence the model handles.")

    @model_validator(mode="after")
    def _head_dim(self) -> FreshModel:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size // self.num_heads < 32:
            raise ValueError(
                f"head_dim = hidden_size / num_heads = {self.hidden_size // self.num_heads}; expected >= 32 "
                "(vLLM's CPU attention refuses smaller heads)"
            )
        return self


class ModelSpec(Strict):
    """The ``init`` checkpoint: a fresh tiny model on the world tokenizer, or an existing HF causal LM."""

    fresh: FreshModel | None = Field(None, description="Build a fresh tiny Llama (the default when `path` is unset).")
    path: str | None = Field(None, description="Local folder (or hub id, when online) of an HF causal LM to start from.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the checkpoint. Off by default.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.fresh is not None and self.path is not None:
            raise ValueError("give either `fresh` or `path`, not both")
        if self.fresh is None and self.path is None:
            self.fresh = FreshModel()
        return self


# --------------------------------------------------------------------------- world / data


class WorldSpec(BaseModel):
    """The embedded synthetic world: a preset plus any knob of ``harness.world.WorldConfig`` inline."""

    model_config = ConfigDict(extra="allow")
    preset: str = Field("default", description="World preset to start from: `default`, `small` or `smoke`.")



# --------------------------------------------------------------------------- stages


class StageSpec(BaseModel):
    """One node of the stage DAG. Fields beyond these are the stage kind's own options."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(description="Unique stage name; packaged configs name stages after their kind.")
    kind: str = Field(description="Registered stage kind: pretrain, sft, reward, ppo, dpo, ...")
    from_: str = Field(INIT, alias="from", description="Parent checkpoint: `init` or another stage's name.")
    reward: str | None = Field(None, description="Name of the `reward` stage an RL stage optimises against.")
    data: str | None = Field(None, description="Training data file (JSONL/Parquet) or Hugging Face dataset "
                             "`hf:NAME[:CONFIG][@SPLIT]`; default: the world's file for this kind.")

    def options(self) -> dict[str, Any]:
        """The kind-specific fields as written in the config."""
        return dict(self.model_extra or {})



# --------------------------------------------------------------------------- suites, backend, gate


class JudgeSpec(Strict):
    kind: Literal["rules", "llm"] = Field("rules", description="`rules`: documented phrase lists; `llm`: an LLM judge.")
    model: str | None = Field(None, description="Checkpoint folder of the LLM judge (kind=llm).")
    template: str | None = Field(
        None, description="LLM judge prompt template file (UTF-8 text with {prompt} and {response}); default: the "
                          "built-in template (suites.judges.JUDGE_TEMPLATE). Its content hash is in every result's key.")
    validation: list[str] = Field(
        default_factory=list,
        description="Human-labelled completions (CSV: prompt, completion, final_label in XSTest's classes, or label "
                    "refuse/partial/comply) this judge is checked against when a run starts; agreement and kappa "
                    "are stored with the run and shown next to the metrics the judge produced (`harness judge check`).")


class SuiteSpec(Strict):
    name: str = Field(description="Registered suite name: hallucination, refusal, verbosity, topic_coverage, ...")
    alias: str | None = Field(
        None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
        description="Name this entry's results are stored under (metrics read `alias.metric`); needed when one "
                    "suite is listed twice, e.g. `refusal` on the world's items and on XSTest (alias: xstest).",
    )
    data: str | None = Field(None, description="Items file (JSONL/CSV); default: the world's items for this suite.")
    max_items: int | None = Field(None, ge=1, description="Evaluate only the first N items (after a stable order).")
    samples_per_item: int = Field(1, ge=1, description="Generations per item; >1 needs temperature > 0 and reports consistency.")
    temperature: float | None = Field(None, ge=0, description="Overrides the backend's decoding temperature for this suite.")
    judge: JudgeSpec = Field(default_factory=JudgeSpec, description="Who decides refusal / abstention / correctness.")
    options: dict[str, Any] = Field(default_factory=dict, description="Suite-specific options (see the suite's docs).")

    @property
    def label(self) -> str:
        """What results are stored under: the alias, else the suite name."""
        return self.alias or self.name


class DecodingSpec(Strict):
    max_new_tokens: int = Field(64, ge=1, description="Longest response generated.")
    temperature: float = Field(0.0, ge=0, description="0 means greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, description="Sampling seed.")
    batch_size: int = Field(32, ge=1, description="Prompts per forward batch.")


class BackendSpec(Strict):
    name: str = Field("auto", description="`auto` (vLLM on CUDA, else hf), `hf`, or `vllm`.")
    decoding: DecodingSpec = Field(default_factory=DecodingSpec, description="Decoding settings; part of every result key.")
    dtype: str = Field("auto", description="`auto`, `float32`, `bfloat16`, `float16` (vLLM on CPU needs float32).")
    threads: int | None = Field(None, ge=1, description="torch threads for hf on CPU (default: measured best, see README).")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs each model replica is sharded over (part of the key).")
    data_parallel_size: int = Field(
        1, ge=1, description="vLLM: model replicas, each on its own tensor_parallel_size GPUs; a suite's prompts are "
        "split between them in order and the answers gathered in order.")


class GateRule(Strict):
    metric: str = Field(description="`suite.metric` as stored, e.g. refusal.harmful_refusal_rate.")
    min: float | None = Field(None, description="Candidate value must be >= this.")
    max: float | None = Field(None, description="Candidate value must be <= this.")
    max_increase: float | None = Field(None, ge=0, description="Candidate may exceed the baseline by at most this.")
    max_decrease: float | None = Field(None, ge=0, description="Candidate may fall below the baseline by at most this.")
    max_regression: float | None = Field(
        None, ge=0, description="Candidate may be worse than the baseline by at most this; 'worse' from the metric's higher_is_better."
    )

    @model_validator(mode="after")
    def _some_bound(self) -> GateRule:
        bounds = (self.min, self.max, self.max_increase, self.max_decrease, self.max_regression)
        if all(v is None for v in bounds):
            raise ValueError("a rule needs at least one of min, max, max_increase, max_decrease, max_regression")
        if "." not in self.metric.split("[", 1)[0]:
            raise ValueError(f"metric {self.metric!r}: expected `suite.metric`, e.g. refusal.harmful_refusal_rate")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}: no value can pass")
        return self

    def is_relative(self) -> bool:
        """Whether the rule compares against a baseline."""
        return any(v is not None for v in (self.max_increase, self.max_decrease, self.max_regression))


class GateSpec(Strict):
    mode: Literal["significance", "non_inferiority", "strict"] = Field(
        "significance",
        description="How a relative bound (max_increase/max_decrease/max_regression, margin m) decides. significance: "
        "fails when the regression is shown to exceed m (one-sided H0 regression <= m rejected; Holm over the bounds "
        "whose point estimate crosses m); crossed but not shown is `inconclusive`. non_inferiority: passes only when "
        "the regression is shown to be within m (one-sided H0 regression >= m rejected; Holm over every relative "
        "bound), else fails. strict: the point estimate alone.",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="One-sided family-wise level of the tests (Holm).")
    on_missing: Literal["fail", "warn"] = Field("fail", description="What a missing baseline/suite/metric does.")
    on_inconclusive: Literal["warn", "fail"] = Field(
        "warn",
        description="Exit code of an `inconclusive` rule (significance mode: the point estimate crosses the margin but "
        "the test does not show it): warn -> 0 (reported, passes), fail -> 1.",
    )
    rules: list[GateRule] = Field(default_factory=list, description="The thresholds.")

    @classmethod
    def from_mapping(cls, raw: Any, source: str, prefix: str = "") -> GateSpec:
        """Validate a gate mapping (mode, alpha, on_missing, on_inconclusive, rules); ConfigError names source and key."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: {prefix or 'top level'}: expected a mapping with `rules:` "
                              f"(and optional mode, alpha, on_missing, on_inconclusive), got {type(raw).__name__}")
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            raise format_errors(source, [(prefix + loc_path(e["loc"]), pydantic_msg(e)) for e in exc.errors()]) from None
        if not spec.rules:
            raise ConfigError(f"{source}: {prefix}rules: no rules given; expected at least one")
        return spec

    @classmethod
    def load(cls, path: str | Path) -> GateSpec:
        """Gate rules from a YAML file: the gate mapping itself, or a pipeline config with `gate:`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: gate rules file not found")
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        if isinstance(raw, dict) and "rules" not in raw and isinstance(raw.get("gate"), dict):
            return cls.from_mapping(raw["gate"], str(path), "gate.")
        return cls.from_mapping(raw, str(path))


# metrics with a natural unit keep the calibrated relative rule (a +6-token PPO effect on ~27 tokens)
NATURAL_UNIT_MIN_EFFECT: dict[str, float | str | None] = {
    f"verbosity.{m}": "10%" for m in ("mean_tokens", "median_tokens", "p90_tokens", "mean_words", "length_ratio")}


class AttributionSpec(Strict):
    """How stage effects are tested, sized and decided; stored with every effect row."""

    alpha: float = Field(0.01, gt=0, lt=1, description="Family-wise error rate: an effect is significant when "
                         "its Holm-adjusted p-value (over every headline metric × stage of the run) is below alpha.")
    intervals: Literal["simultaneous", "per_effect"] = Field(
        "simultaneous", description="Level of the effect intervals. simultaneous: 1 − alpha/m for the m tested "
        "headline effects (Bonferroni), which hold together with probability ≥ 1 − alpha, the decision's level; "
        "per_effect: 1 − alpha each, not adjusted for multiplicity. Breakdowns (outside the Holm family) get "
        "1 − alpha. A `flat` expectation is an equivalence test (TOST): Holm's step-down over the k flat "
        "expectations, the i-th smallest p at alpha/(k − i + 1) (simultaneous), or at alpha each (per_effect).")
    rate_min_effect: float = Field(0.05, gt=0, le=1, description="Minimum effect of a rate or accuracy, absolute.")
    standardised_min_effect: float = Field(
        0.2, gt=0, description="Minimum standardised effect, Cohen's d_z (mean paired difference / SD of the paired "
        "differences), of a continuous metric without a natural unit or a `min_effect` entry (reward scores, "
        "probabilities): adding a constant to the metric does not change it.")
    correlation_min_effect: float = Field(0.2, gt=0, le=2, description="Minimum change of a correlation, absolute.")
    min_effect: dict[str, float | str | None] = Field(
        default_factory=lambda: dict(NATURAL_UNIT_MIN_EFFECT),
        description="Per metric (or base metric, before any `[group]`): a number (absolute, in the metric's unit), "
        "'N%' (relative to the parent's value, for metrics with a natural unit) or 'dz=N' (standardised). Merged "
        "over the defaults (token / word lengths and the length ratio: 10%); null drops a default.")
    permutations: int = Field(10_000, ge=100, description="Monte Carlo sign flips per continuous test (raised to "
                              "2m/alpha for m tests, so the smallest p-value can pass Holm).")
    seed: int = Field(0, description="Seed of the permutation tests (mixed with stage and metric).")
    reward_length_corr_threshold: float = Field(
        0.1, ge=-1, le=1, description="Reward hacking is flagged only when the stage's reward model pays for "
        "length: its reward's correlation with length (verbosity.reward_length_corr on the parent policy's "
        "answers, else reward_model.reward_length_corr on its held-out pairs) is above this and significantly "
        "positive (Fisher z, one-sided at alpha).")

    @staticmethod
    def rule(value: float | str) -> tuple[Literal["absolute", "relative", "standardised"], float]:
        """A `min_effect` entry as (kind, size): 0.05 -> absolute, '10%' -> relative 0.1, 'dz=0.3' -> standardised."""
        if isinstance(value, int | float):
            return "absolute", abs(float(value))
        text = value.strip().replace(" ", "")
        try:
            if text.endswith("%"):
                return "relative", abs(float(text[:-1])) / 100
            if text.lower().startswith("dz="):
                return "standardised", abs(float(text[3:]))
        except ValueError:
            pass
        raise ValueError(f"expected a number, 'N%' or 'dz=N', got {value!r}")

    @model_validator(mode="after")
    def _merge_min_effect(self) -> AttributionSpec:
        merged = {**NATURAL_UNIT_MIN_EFFECT, **self.min_effect}
        for metric, value in merged.items():
            if value is not None:
                try:
                    self.rule(value)
                except ValueError as exc:
                    raise ValueError(f"min_effect[{metric!r}]: {exc}") from None
        self.min_effect = merged
        return self


# --------------------------------------------------------------------------- pipeline


class PipelineConfig(Strict):
    """A whole experiment: where it writes, the starting model, the data, the stage DAG, suites, backend, gate."""

    name: str = Field(description="Experiment name (shown in reports and the dashboard).")
    seed: int = Field(0, description="Seed for everything (data order, init, sampling).")
    output_dir: str = Field(description="Everything the run writes goes under here: checkpoints, store, reports.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="The `init` checkpoint.")
    world: WorldSpec | None = Field(
        default_factory=WorldSpec, description="The embedded synthetic world; null when every stage and suite names `data`."
    )
    stages: list[StageSpec] = Field(default_factory=list, description="The stage DAG (edges by `from` and `reward`).")
    suites: list[SuiteSpec] = Field(default_factory=list, description="Suites run on every checkpoint they apply to.")
    backend: BackendSpec = Field(default_factory=BackendSpec, description="Inference engine for every evaluation.")
    gate: GateSpec | None = Field(None, description="Optional gate rules used by `harness gate` by default.")
    attribution: AttributionSpec = Field(default_factory=AttributionSpec,
                                         description="Tests, intervals and minimum effects of the stage attribution.")

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise KeyError(f"no stage named {name!r} (stages: {', '.join(s.name for s in self.stages)})")


# --------------------------------------------------------------------------- graph checks


def graph_errors(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """The stage graph's own checks (no registry needed); returns (key path, message) pairs."""
    errors: list[tuple[str, str]] = []
    names = [s.name for s in cfg.stages]
    seen: set[str] = set()
    for i, spec in enumerate(cfg.stages):
        at = f"stages[{i}]"
        if spec.name == INIT:
            errors.append((f"{at}.name", f"{INIT!r} is reserved for the starting checkpoint"))
        if spec.name in seen:
            errors.append((f"{at}.name", f"duplicate stage name {spec.name!r}; stage names must be unique"))
        seen.add(spec.name)
        if spec.from_ != INIT and spec.from_ not in names:
            errors.append((f"{at}.from", f"unknown parent {spec.from_!r}; expected {INIT!r} or one of {names}"))
        if spec.reward is not None and spec.reward not in names:
            errors.append((f"{at}.reward", f"unknown reward stage {spec.reward!r}; expected one of {names}"))
    labels: dict[str, int] = {}
    for i, suite in enumerate(cfg.suites):
        if suite.label in labels:
            errors.append((f"suites[{i}].alias", f"suite {suite.label!r} is already listed at suites[{labels[suite.label]}]; "
                           "give each entry of one suite a distinct `alias` (e.g. alias: xstest)"))
        labels.setdefault(suite.label, i)
    return errors + _cycle_errors(cfg)


def _cycle_errors(cfg: PipelineConfig) -> list[tuple[str, str]]:
    deps = {s.name: [d for d in (s.from_, s.reward) if d and d != INIT] for s in cfg.stages}
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        if state.get(node) == 2 or node not in deps:
            return None
        if state.get(node) == 1:
            return path[path.index(node):] + [node]
        state[node] = 1
        for dep in deps[node]:
            cycle = visit(dep, path + [node])
            if cycle:
                return cycle
        state[node] = 2
        return None

    for i, spec in enumerate(cfg.stages):
        cycle = visit(spec.name, [])
        if cycle:
            return [(f"stages[{i}].from", "cycle in the stage graph: " + " -> ".join(cycle))]
    return []


def topological_order(cfg: PipelineConfig) -> list[StageSpec]:
    """Stages in dependency order (parents and reward models first), stable w.r.t. the file order."""
    done: set[str] = {INIT}
    order: list[StageSpec] = []
    pending = list(cfg.stages)
    while pending:
        ready = next((s for s in pending if s.from_ in done and (s.reward is None or s.reward in done)), None)
        if ready is None:
            raise ConfigError("cycle in the stage graph: " + ", ".join(s.name for s in pending))
        order.append(ready)
        done.add(ready.name)
        pending.remove(ready)
    return order


def dump(cfg: PipelineConfig) -> dict[str, Any]:
    """The resolved config as plain data (aliases, so it loads back)."""
    return cfg.model_dump(mode="json", by_alias=True, exclude_none=False)
