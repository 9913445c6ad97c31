"""A multi-seed comparison: its grid of runs and its results table.

A comparison is a grid of ordinary training runs, one per (scenario, exit
rule, method, seed), each in its own directory under the comparison's. Seeds,
not evaluation sessions, are the unit of the table's confidence intervals
and tests: two seeds of one method differ in their training, and that
variation is what a claim that one method beats another must survive.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import pathlib
import re
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from lerl_recsim import learning_curves, metrics

SIGNIFICANCE_LEVEL = 0.05


@dataclasses.dataclass(frozen=True)
class ExitRuleChoice:
  """An exit rule by name, optionally with a preset: `category_window:dorl`."""

  name: str
  preset: str | None = None

  @classmethod
  def parse(cls, text: str) -> "ExitRuleChoice":
    name, _, preset = text.partition(":")
    return cls(name, preset or None)

  @property
  def label(self) -> str:
    return self.name if self.preset is None else f"{self.name}:{self.preset}"

  @property
  def params(self) -> dict[str, str]:
    return {} if self.preset is None else {"preset": self.preset}


@dataclasses.dataclass(frozen=True)
class Method:
  """An agent, with its planner backend when the agent takes one."""

  agent: str
  planner: str | None = None

  @property
  def label(self) -> str:
    return self.agent if self.planner is None else f"{self.agent}+{self.planner}"


def path_part(text: str) -> str:
  """A readable directory name for a label (planner paths hold slashes)."""
  return re.sub(r"[^A-Za-z0-9._+-]", "_", text.replace(":", "-"))


@dataclasses.dataclass(frozen=True)
class ComparisonRun:
  """One training run of the grid."""

  scenario: str
  exit_rule: ExitRuleChoice
  method: Method
  seed: int

  @property
  def name(self) -> str:
    return (f"{self.scenario}/{self.exit_rule.label}/{self.method.label}/"
            f"seed {self.seed}")

  @property
  def relative_path(self) -> pathlib.PurePath:
    """SCENARIO/EXIT_RULE/METHOD/seed_N, readable and path-safe."""
    return pathlib.PurePath(
        path_part(self.scenario), path_part(self.exit_rule.label),
        path_part(self.method.label), f"seed_{self.seed}")

  def directory(self, output_dir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(output_dir) / "runs" / self.relative_path

  def log(self, output_dir: str | pathlib.Path) -> pathlib.Path:
    return (pathlib.Path(output_dir) / "logs" /
            self.relative_path.with_suffix(".log"))

  @property
  def condition(self) -> tuple[str, str]:
    return self.scenario, self.exit_rule.label


def grid(scenarios: Sequence[str], exit_rules: Sequence[ExitRuleChoice],
         methods: Sequence[Method], num_seeds: int, first_seed: int = 0
         ) -> list[ComparisonRun]:
  """Every run, in the order they execute: seed (`first_seed` onwards),
  condition, method.

  Seed-major, so that a sweep stopped early holds whole seeds of every
  method, and runs side by side are different methods (the LLM planners'
  runs rarely share the cores with each other).
  """
  return [ComparisonRun(scenario, rule, method, seed)
          for seed in range(first_seed, first_seed + num_seeds)
          for scenario in scenarios
          for rule in exit_rules for method in methods]


# The ceiling every table reads cumulative reward against, when compared.
CEILING = "planning_oracle"
CEILING_SHARE = "planning_oracle_share"
# A run's second evaluation, of its stochastic policy (PPO's), in summary.json.
SAMPLED = "sampled"
# What an LLM planner is measured against under the same agent: the plans
# it falls back to.
PLANNER_CONTROL = "heuristic"


@dataclasses.dataclass(frozen=True)
class Column:
  """A table column: a per-run value and which direction is better."""

  key: str
  title: str
  higher_is_better: bool
  digits: int


COLUMNS: tuple[Column, ...] = (
    Column("cumulative_reward", "cumulative reward", True, 2),
    Column("sampled_reward", "cumulative reward, sampled policy", True, 2),
    Column("interaction_length", "interaction length", True, 1),
    Column("step_reward", "per-step reward", True, 3),
    Column("category_coverage", "category coverage", True, 1),
    Column("repetition_rate", "repetition rate", False, 3),
    Column("majority_category_share", "majority-category share", False, 3),
    Column("reward_at_10pct", "cumulative reward at 10% of training", True, 2),
    Column("reward_at_30pct", "cumulative reward at 30% of training", True, 2),
    Column("levelled_off", "seeds levelled off", True, 2),
    Column(CEILING_SHARE, "share of the planning oracle", True, 2),
    Column("llm_calls_per_1k", "LLM calls / 1k user-steps", False, 1),
    Column("llm_plan_share", "training plans by the LLM", True, 2),
    Column("wall_time_s", "wall time (s)", False, 0),
)


def run_values(summary: Mapping[str, Any]) -> dict[str, float]:
  """One value per column from a run's summary.json.

  The episode metrics are the run's means over its evaluation sessions
  (`sampled_reward`: cumulative reward of the evaluation that samples the
  stochastic policy, NaN for agents evaluated greedily only); sample
  efficiency is cumulative reward at the last evaluation within 10%
  and 30% of the training iterations, and `levelled_off` 1 where the run's
  learning curve met the plateau rule at its end (all NaN for agents that do
  not train); LLM
  calls are the planner's calls per 1,000 training user-steps, and the plan
  share the fraction of training plans the LLM made (not the heuristic
  while it was busy or failed): both NaN without an LLM planner or training.
  The share of the planning oracle's cumulative reward is NaN here;
  `build_table` fills it in where the planning oracle was compared.
  """
  values = {name: float(summary[name]["mean"])
            for name in metrics.EPISODE_METRICS}
  sampled = summary.get(SAMPLED, {}).get("cumulative_reward")
  values["sampled_reward"] = float(sampled["mean"]) if sampled else math.nan
  curve = summary.get("learning_curve")
  for key, fraction in (("reward_at_10pct", 0.1), ("reward_at_30pct", 0.3)):
    values[key] = learning_curves.value_at(curve, fraction) if curve else math.nan
  values["levelled_off"] = (float(curve["levelled_off"]) if curve
                            else math.nan)
  train = summary.get("planner", {}).get("train", {})
  steps = train.get("user_steps", 0.0)
  values["llm_calls_per_1k"] = (1000.0 * train["llm_calls"] / steps
                                if steps else math.nan)
  planned = train.get("planned_users", 0.0)
  values["llm_plan_share"] = (train["llm_plans"] / planned
                              if planned and (train["llm_plans"] or
                                              train["llm_calls"]) else math.nan)
  values["wall_time_s"] = float(summary["wall_time_s"])
  values[CEILING_SHARE] = math.nan  # needs the other runs: `build_table`
  return values


def welch_p_value(values: Sequence[float], reference: Sequence[float]) -> float:
  """Two-sided Welch's t-test p-value (NaN with < 2 seeds or no variance)."""
  a, b = np.asarray(values, float), np.asarray(reference, float)
  if (len(a) < 2 or len(b) < 2 or not np.isfinite(a).all() or
      not np.isfinite(b).all()):
    return math.nan
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore", RuntimeWarning)
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


@dataclasses.dataclass
class Row:
  """One method under one condition, over the seeds that finished."""

  scenario: str
  exit_rule: str
  method: Method
  seeds: list[int]
  num_seeds: int
  values: dict[str, list[float]]
  stats: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


def resolve_reference(reference: str, methods: Sequence[Method]) -> Method:
  """The method a reference names: a method label, or an agent with one
  method."""
  exact = [m for m in methods if m.label == reference]
  if exact:
    return exact[0]
  by_agent = [m for m in methods if m.agent == reference]
  if len(by_agent) == 1:
    return by_agent[0]
  labels = [m.label for m in methods]
  if by_agent:
    raise ValueError(f"reference {reference!r} is ambiguous: it names "
                     f"{[m.label for m in by_agent]}; give one of them")
  raise ValueError(f"reference {reference!r} is not a compared method; "
                   f"expected one of {labels}")


def read_summary(directory: pathlib.Path) -> dict[str, Any] | None:
  path = directory / "summary.json"
  return json.loads(path.read_text()) if path.exists() else None


def build_table(runs: Sequence[ComparisonRun], output_dir: str | pathlib.Path,
                reference: Method) -> list[Row]:
  """Rows of every (condition, method), with mean ± CI95 across the seeds
  that finished and Welch's p-value against `reference` in its condition."""
  rows: dict[tuple[str, str, Method], Row] = {}
  for run in runs:
    key = (*run.condition, run.method)
    row = rows.setdefault(key, Row(run.scenario, run.exit_rule.label,
                                   run.method, [], 0,
                                   {c.key: [] for c in COLUMNS}))
    row.num_seeds += 1
    summary = read_summary(run.directory(output_dir))
    if summary is None:
      continue
    row.seeds.append(run.seed)
    for name, value in run_values(summary).items():
      row.values[name].append(value)
  for (scenario, rule, _), row in rows.items():
    baseline = rows.get((scenario, rule, reference))
    ceiling = rows.get((scenario, rule, Method(CEILING)))
    if ceiling is not None and ceiling.values["cumulative_reward"]:
      best = float(np.mean(ceiling.values["cumulative_reward"]))
      row.values[CEILING_SHARE] = [v / best for v in
                                   row.values["cumulative_reward"]]
    for column in COLUMNS:
      values = np.asarray(row.values[column.key], float)
      summary = (metrics.mean_and_ci95(values) if np.isfinite(values).all()
                 else {"mean": math.nan, "ci95": math.nan})
      summary["p"] = (math.nan if baseline is None or baseline is row else
                      welch_p_value(values, baseline.values[column.key]))
      row.stats[column.key] = summary
  return list(rows.values())


@dataclasses.dataclass(frozen=True)
class Contrast:
  """One method against a control method under one condition: per key of
  `CONTRAST_KEYS`, the difference of the seed means (method minus control),
  the control's seed mean and Welch's p."""

  scenario: str
  exit_rule: str
  method: Method
  control: Method
  differences: dict[str, float]
  control_means: dict[str, float]
  p_values: dict[str, float]


# Cumulative reward at 10%, 30% and 100% of training: where methods differ.
CONTRAST_KEYS = ("reward_at_10pct", "reward_at_30pct", "cumulative_reward")


def contrast(row: Row, control: Row) -> Contrast:
  """`row` against `control` at 10%, 30% and 100% of training."""
  differences, control_means, p_values = {}, {}, {}
  for key in CONTRAST_KEYS:
    both = bool(row.values[key]) and bool(control.values[key])
    control_means[key] = (float(np.mean(control.values[key]))
                          if control.values[key] else math.nan)
    differences[key] = (float(np.mean(row.values[key])) - control_means[key]
                        if both else math.nan)
    p_values[key] = welch_p_value(row.values[key], control.values[key])
  return Contrast(row.scenario, row.exit_rule, row.method, control.method,
                  differences, control_means, p_values)


def reference_contrasts(rows: Sequence[Row], reference: Method
                        ) -> list[Contrast]:
  """Every method that trains against `reference` under the same condition,
  each at 10%, 30% and 100% of its own training: whether, when and by how
  much it beats the reference."""
  controls = {(row.scenario, row.exit_rule): row for row in rows
              if row.method == reference}
  return [contrast(row, controls[(row.scenario, row.exit_rule)])
          for row in rows
          if row.method != reference
          and (row.scenario, row.exit_rule) in controls
          and np.isfinite(row.values["reward_at_10pct"]).any()]


def planner_contrasts(rows: Sequence[Row]) -> list[Contrast]:
  """Every planner backend of an agent compared with several, against the
  `PLANNER_CONTROL` backend (else the first one compared) under the same
  agent and condition: what an LLM adds to the same low level over the plans
  it falls back to."""
  by_agent: dict[tuple[str, str, str], list[Row]] = {}
  for row in rows:
    if row.method.planner is not None:
      by_agent.setdefault((row.scenario, row.exit_rule, row.method.agent),
                          []).append(row)
  contrasts = []
  for backends in by_agent.values():
    if len(backends) < 2:
      continue
    control = next((row for row in backends
                    if row.method.planner == PLANNER_CONTROL), backends[0])
    contrasts += [contrast(row, control) for row in backends
                  if row is not control]
  return contrasts


def contrast_cell(item: Contrast, key: str) -> str:
  """The cell "+0.50 (+25%, p = 0.123)": the difference, as a share of the
  control's mean, and Welch's p; "—" where either side has no value."""
  difference, p = item.differences[key], item.p_values[key]
  if not math.isfinite(difference):
    return "—"
  details = []
  if item.control_means[key]:
    details.append(f"{100 * difference / item.control_means[key]:+.0f}%")
  if math.isfinite(p):
    details.append(f"p = {p:.3f}")
  return f"{difference:+.2f}" + (f" ({', '.join(details)})" if details else "")


def format_contrasts(contrasts: Sequence[Contrast], title: str,
                     explanation: str) -> str:
  """A Markdown section of results.md (empty without contrasts)."""
  if not contrasts:
    return ""
  lines = [f"## {title}", "", explanation + " Each cell: the difference of "
           "the seed means of cumulative reward (method minus control), as a "
           "share of the control's mean, and Welch's p across seeds.", "",
           "| scenario | exit rule | method | against | at 10% of training "
           "| at 30% | at 100% |", "|---|---|---|---|---|---|---|"]
  for item in contrasts:
    lines.append(f"| {item.scenario} | {item.exit_rule} | "
                 f"{item.method.label} | {item.control.label} | "
                 + " | ".join(contrast_cell(item, key)
                              for key in CONTRAST_KEYS) + " |")
  return "\n".join(lines) + "\n"


def format_all_contrasts(rows: Sequence[Row], reference: Method) -> str:
  """results.md's two contrast sections: each trained method against the
  reference, and each LLM planner against the plans it falls back to."""
  sections = (
      format_contrasts(
          reference_contrasts(rows, reference),
          f"Against the reference `{reference.label}`",
          "Each method that trains against the reference under the same "
          "condition, each at 10%, 30% and 100% of its own training budget "
          "(agent families train for different budgets; "
          "learning_curves.png sets them on one axis of training "
          "user-steps)."),
      format_contrasts(
          planner_contrasts(rows), "What the planner adds",
          f"Each planner backend of an agent compared with several, against "
          f"`{PLANNER_CONTROL}` (the plans an LLM planner falls back to) or "
          "else the first backend compared, under the same agent."))
  return "\n".join(section for section in sections if section)


@dataclasses.dataclass
class CurveRow:
  """One trained method's learning curve under one condition, over seeds.

  Attributes:
    iterations, user_steps: where the evaluations were (the first seed's;
      the seeds of a method share its budget).
    points: per evaluation, mean and CI95 of cumulative reward across the
      seeds and Welch's p against the reference where it was evaluated at
      the same iteration ("p", NaN otherwise).
    levelled_off: whether the plateau rule holds at the end of the seed-mean
      curve (with the across-seed CIs); None with fewer than 2 seeds.
  """

  scenario: str
  exit_rule: str
  method: Method
  seeds: list[int]
  iterations: list[int]
  user_steps: list[int | None]
  points: list[dict[str, float]]
  levelled_off: bool | None


def build_curves(runs: Sequence[ComparisonRun], output_dir: str | pathlib.Path,
                 reference: Method,
                 rule: learning_curves.PlateauRule = learning_curves.PlateauRule()
                 ) -> list[CurveRow]:
  """Seed-mean learning curves of the methods that train.

  A seed's curve swings between evaluations (a greedy DQN policy by more
  than its CI); the mean over seeds is the curve the plateau rule and the
  per-budget comparison with the reference are judged on. Seeds are cut to
  the evaluations all of them reached (a run stopped by the rule is shorter).
  """
  curves: dict[tuple[str, str, Method], list[tuple[int, Mapping[str, Any]]]] = {}
  for run in runs:
    summary = read_summary(run.directory(output_dir))
    curve = summary and summary.get("learning_curve")
    if curve and curve.get("mean"):
      curves.setdefault((*run.condition, run.method), []).append(
          (run.seed, curve))
  rows = []
  for (scenario, rule_label, method), seeded in curves.items():
    length = min(len(curve["mean"]) for _, curve in seeded)
    first = seeded[0][1]
    values = np.array([curve["mean"][:length] for _, curve in seeded], float)
    baseline = curves.get((scenario, rule_label, reference))
    points = []
    for index in range(length):
      point = metrics.mean_and_ci95(values[:, index])
      point["p"] = math.nan
      if baseline is not None and method != reference:
        at = [c["mean"][index] for _, c in baseline
              if index < len(c["mean"])
              and c["iterations"][index] == first["iterations"][index]]
        point["p"] = welch_p_value(values[:, index], at)
      points.append(point)
    levelled = (rule.levelled([p["mean"] for p in points],
                              [p["ci95"] for p in points])
                if len(seeded) > 1 else None)
    rows.append(CurveRow(scenario, rule_label, method,
                         [seed for seed, _ in seeded],
                         list(first["iterations"][:length]),
                         list(first.get("user_steps", [None] * length)[:length]),
                         points, levelled))
  return rows


def format_curves(rows: Sequence[CurveRow], reference: Method,
                  rule: learning_curves.PlateauRule = learning_curves.PlateauRule()
                  ) -> str:
  """A Markdown section of results.md: per condition, each method's
  seed-mean curve by evaluation."""
  lines = ["## Learning curves", "",
           "Cumulative reward of the greedy policy at each evaluation: mean "
           "± 95% CI across seeds, with the evaluation's iteration. †: p < "
           f"{SIGNIFICANCE_LEVEL} (Welch, across seeds) against "
           f"`{reference.label}` evaluated at the same iteration. Levelled "
           f"off: the plateau rule ({rule.describe()}) on the seed-mean "
           "curve, with the across-seed CIs."]
  condition = None
  for row in rows:
    if (row.scenario, row.exit_rule) != condition:
      condition = (row.scenario, row.exit_rule)
      lines += ["", f"### {row.scenario} — exit rule {row.exit_rule}", ""]
    cells = []
    for iteration, point in zip(row.iterations, row.points):
      text = f"{point['mean']:.2f}"
      if math.isfinite(point["ci95"]):
        text += f" ± {point['ci95']:.2f}"
      if math.isfinite(point["p"]) and point["p"] < SIGNIFICANCE_LEVEL:
        text += " †"
      cells.append(f"{text} at {iteration:,}")
    verdict = {None: "— (one seed)", True: "yes", False: "no"}[row.levelled_off]
    name = row.method.label + (" (reference)" if row.method == reference else "")
    lines.append(f"- **{name}** ({len(row.seeds)} seeds; levelled off: "
                 f"{verdict}): " + "; ".join(cells))
  return "\n".join(lines) + "\n"


def best_means(rows: Sequence[Row]) -> dict[tuple[str, str, str], float]:
  """The best displayed mean per (scenario, exit rule, column)."""
  best: dict[tuple[str, str, str], float] = {}
  for column in COLUMNS:
    by_condition: dict[tuple[str, str], list[float]] = {}
    for row in rows:
      mean = row.stats[column.key]["mean"]
      if math.isfinite(mean):
        by_condition.setdefault((row.scenario, row.exit_rule), []).append(
            round(mean, column.digits))
    for (scenario, rule), means in by_condition.items():
      if len(means) > 1:
        choose = max if column.higher_is_better else min
        best[(scenario, rule, column.key)] = choose(means)
  return best


def format_cell(summary: Mapping[str, float], column: Column,
                best: float | None) -> str:
  mean, ci95, p = summary["mean"], summary["ci95"], summary["p"]
  if not math.isfinite(mean):
    return "—"
  text = f"{mean:.{column.digits}f}"
  if math.isfinite(ci95):
    text += f" ± {ci95:.{column.digits}f}"
  if best is not None and round(mean, column.digits) == best:
    text = f"**{text}**"
  if math.isfinite(p) and p < SIGNIFICANCE_LEVEL:
    text += " †"
  return text


def format_markdown(rows: Sequence[Row], reference: Method,
                    header: Sequence[str] = ()) -> str:
  """The table as Markdown: one section per (scenario, exit rule)."""
  best = best_means(rows)
  lines = ["# Comparison results", "", *header]
  titles = " | ".join(column.title for column in COLUMNS)
  condition = None
  for row in rows:
    if (row.scenario, row.exit_rule) != condition:
      condition = (row.scenario, row.exit_rule)
      lines += ["", f"## {row.scenario} — exit rule {row.exit_rule}", "",
                f"| method | seeds | {titles} |",
                "|---|---|" + "---|" * len(COLUMNS)]
    cells = [format_cell(row.stats[c.key], c,
                         best.get((row.scenario, row.exit_rule, c.key)))
             for c in COLUMNS]
    name = row.method.label + (" (reference)" if row.method == reference else "")
    lines.append(f"| {name} | {len(row.seeds)}/{row.num_seeds} | "
                 f"{' | '.join(cells)} |")
  higher = ", ".join(c.title for c in COLUMNS if c.higher_is_better)
  lower = ", ".join(c.title for c in COLUMNS if not c.higher_is_better)
  lines += [
      "",
      "Each cell: mean ± half-width of the Student-t 95% confidence interval "
      "across seeds (the seeds that finished, `seeds` column); a seed's value "
      "is its run's mean over its final evaluation's sessions (fresh users, "
      "one session each).",
      f"Bold: best in its column within its exit rule (higher is better for "
      f"{higher}; lower for {lower}).",
      f"†: p < {SIGNIFICANCE_LEVEL} in a two-sided Welch's t-test (unequal "
      f"variances) across seeds against the reference method "
      f"`{reference.label}` under the same scenario and exit rule; no "
      "correction for multiple comparisons. All p-values are in results.csv.",
      "Sample efficiency: a run's cumulative reward at its last evaluation "
      "within 10% and 30% of its training iterations (the last column is at "
      "100%). Seeds levelled off: the share of seeds whose learning curve "
      f"met the plateau rule at its end ({learning_curves.PlateauRule().describe()}).",
      "LLM calls / 1k user-steps: planner LLM calls during training per 1,000 "
      "training user-steps; — for agents without a planner. Wall time: the "
      "run's last process, so a resumed run counts from its resume.",
  ]
  return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[Row], reference: Method) -> str:
  """The table as CSV: mean, CI95 and p-value against the reference per
  column."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["scenario", "exit_rule", "method", "agent", "planner",
                   "num_seeds_finished", "num_seeds", "reference"] +
                  [f"{c.key}_{part}" for c in COLUMNS
                   for part in ("mean", "ci95", "p_vs_reference")])
  for row in rows:
    writer.writerow(
        [row.scenario, row.exit_rule, row.method.label, row.method.agent,
         row.method.planner or "", len(row.seeds), row.num_seeds,
         reference.label] +
        [repr(row.stats[c.key][part]) for c in COLUMNS
         for part in ("mean", "ci95", "p")])
  return buffer.getvalue()
