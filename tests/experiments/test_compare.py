"""lerl-compare: input checks, the results table, plots, and a tiny sweep
that crashes, is killed, and resumes."""

import csv
import functools
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from lerl_recsim import evaluation, learning_curves, metrics
from lerl_recsim.experiments import comparison, comparison_plots, run_config
from lerl_recsim.experiments import compare as setup

TRAIN = {"num_iterations": 4, "num_eval_sessions": 10, "num_users": 8,
         "eval_interval": 2, "checkpoint_interval": 1, "log_interval": 2,
         "replan_every": 10}


def hand_ci95(values):
  values = np.asarray(values, float)
  return (values.mean(), stats.t.ppf(0.975, len(values) - 1) *
          values.std(ddof=1) / math.sqrt(len(values)))


def check_png(path: pathlib.Path) -> None:
  assert path.stat().st_size > 5000, path
  with Image.open(path) as image:
    assert image.format == "PNG" and min(image.size) > 200
    assert np.asarray(image.convert("L"), float).std() > 5.0  # not blank


def test_exposure_curve_averages_the_sessions_still_running():
  curve = evaluation.ExposureCurve()
  curve.add(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([True, True]))
  curve.add(np.array([[1.0, 1.0], [0.0, 2.0]]), np.array([True, True]))
  curve.add(np.array([[3.0, 1.0], [9.0, 9.0]]), np.array([True, False]))
  assert curve.to_dict() == {
      "step": [1, 2, 3], "active_sessions": [2, 2, 1],
      "category_coverage": [1.0, 1.5, 2.0],
      "majority_category_share": [1.0, 0.75, 0.75]}


def write_run(directory: pathlib.Path, seed: int, base: float,
              planner: bool) -> dict:
  """A finished run's files, as `lerl-train` writes them."""
  summary = {name: {"mean": base + 0.1 * seed * (i + 1), "ci95": 0.0}
             for i, name in enumerate(metrics.EPISODE_METRICS)}
  summary["planner"] = {"train": {"llm_calls": 5.0 + seed,
                                  "llm_plans": 40.0 + 10 * seed,
                                  "planned_users": 100.0,
                                  "user_steps": 1000.0} if planner else {}}
  summary["wall_time_s"] = 10.0 + seed
  if planner:  # a second, sampled evaluation, as PPO agents have
    summary["sampled"] = {"cumulative_reward": {"mean": base + 0.5 + seed,
                                                "ci95": 0.0}}
  summary["exposure_curve"] = {
      "step": [1, 2, 3], "active_sessions": [4, 3, 1],
      "category_coverage": [1.0, 1.5 + base / 10, 2.0],
      "majority_category_share": [1.0, 0.8, 0.6 + base / 100]}
  # Evaluations at 1, 3 and 10 of 10 iterations: the values at 10% and 30%
  # of training are base + seed + 1 and + 3.
  history = [{"iteration": t, "user_steps": 64 * t,
              "cumulative_reward": {"mean": base + t + seed, "ci95": 0.5},
              "interaction_length": {"mean": base + seed}} for t in (1, 3, 10)]
  if base:  # random (base 0) is scripted: no learning curve
    summary["learning_curve"] = learning_curves.summarise(history)
  (directory / "eval").mkdir(parents=True)
  (directory / "summary.json").write_text(json.dumps(summary))
  (directory / "eval" / "history.jsonl").write_text(
      "\n".join(json.dumps(h) for h in history) + '\n{"cut short')
  return summary


METHODS = [comparison.Method("dqn"), comparison.Method("lerl", "heuristic"),
           comparison.Method("random")]


def write_grid(tmp_path: pathlib.Path, unfinished: int = 0
               ) -> tuple[list[comparison.ComparisonRun], dict]:
  """METHODS over 3 seeds under satisfaction (base reward dqn 1, lerl 2,
  random 0); the last `unfinished` runs never finished."""
  runs = comparison.grid(["interest_evolution"],
                         [comparison.ExitRuleChoice("satisfaction")], METHODS,
                         num_seeds=3)
  base = {"dqn": 1.0, "lerl": 2.0, "random": 0.0}
  summaries = {run: write_run(run.directory(tmp_path), run.seed,
                              base[run.method.agent],
                              run.method.planner is not None)
               for run in runs[:len(runs) - unfinished]}
  return runs, summaries


def hand_values(seed: int, base: float, planner: bool) -> dict[str, float]:
  """By hand, each column's value for a run `write_run` wrote."""
  values = {name: base + 0.1 * seed * (i + 1)
            for i, name in enumerate(metrics.EPISODE_METRICS)}
  learned = base > 0  # random (base 0) has no learning curve
  values["reward_at_10pct"] = base + 1 + seed if learned else math.nan
  values["reward_at_30pct"] = base + 3 + seed if learned else math.nan
  values["levelled_off"] = 0.0 if learned else math.nan  # too few evaluations
  values["llm_calls_per_1k"] = 5.0 + seed if planner else math.nan
  values["llm_plan_share"] = (40.0 + 10 * seed) / 100 if planner else math.nan
  values["wall_time_s"] = 10.0 + seed
  values["sampled_reward"] = base + 0.5 + seed if planner else math.nan
  values["planning_oracle_share"] = math.nan  # no planning oracle here
  return values


def test_table_is_seed_statistics_with_best_and_welch_markers(tmp_path):
  methods = METHODS
  runs, _ = write_grid(tmp_path, unfinished=1)  # random's seed 2
  reference = comparison.resolve_reference("dqn", methods)
  rows = comparison.build_table(runs, tmp_path, reference)
  assert [(r.method.label, r.seeds) for r in rows] == [
      ("dqn", [0, 1, 2]), ("lerl+heuristic", [0, 1, 2]), ("random", [0, 1])]
  base = {"dqn": 1.0, "lerl": 2.0, "random": 0.0}

  def column_values(method: comparison.Method, key: str) -> list[float]:
    seeds = {"random": [0, 1]}.get(method.agent, [0, 1, 2])
    return [hand_values(seed, base[method.agent], method.planner is not None)
            [key] for seed in seeds]

  assert {c.key for c in comparison.COLUMNS} == set(hand_values(0, 1.0, True))
  for row in rows:
    for column in comparison.COLUMNS:
      values = column_values(row.method, column.key)
      got = row.stats[column.key]
      if math.isnan(values[0]):
        assert math.isnan(got["mean"])
        continue
      assert (got["mean"], got["ci95"]) == pytest.approx(hand_ci95(values))
      if row.method != reference:
        dqn = column_values(reference, column.key)
        assert got["p"] == pytest.approx(
            stats.ttest_ind(values, dqn, equal_var=False).pvalue, nan_ok=True)
  assert rows[1].stats["llm_calls_per_1k"]["mean"] == pytest.approx(6.0)
  # lerl (base 2) over seeds 0-2: 2 + 1 + 1 on average at 10%, 2 + 3 + 1 at 30%.
  assert rows[1].stats["reward_at_10pct"]["mean"] == pytest.approx(4.0)
  assert rows[1].stats["reward_at_30pct"]["mean"] == pytest.approx(6.0)
  # Three evaluations are too few for the plateau rule's two windows of 3.
  assert rows[1].stats["levelled_off"]["mean"] == 0.0
  assert rows[1].stats["llm_plan_share"]["mean"] == pytest.approx(0.5)

  markdown = comparison.format_markdown(rows, reference, ["header line"])
  lerl_row = next(l for l in markdown.splitlines() if l.startswith("| lerl+"))
  random_row = next(l for l in markdown.splitlines() if l.startswith("| random"))
  assert "| dqn (reference) | 3/3 |" in markdown and "| 2/3 |" in random_row
  # lerl has the highest reward (bold) and, being higher, the worst
  # repetition; random the lowest repetition rate (bold: lower is better).
  assert lerl_row.split(" | ")[2].startswith("**2.10 ± ")
  assert random_row.split(" | ")[7].startswith("**")
  assert "†" in lerl_row and "Welch's t-test" in markdown
  assert random_row.split(" | ")[3] == "—"  # evaluated greedily only
  assert random_row.split(" | ")[9] == "—"  # no learning curve
  # Sampled: 2.5 + seed; not bold, as no other method has a value.
  assert lerl_row.split(" | ")[3].startswith("3.50 ± ")

  table = list(csv.DictReader(comparison.format_csv(rows, reference).splitlines()))
  assert [r["method"] for r in table] == ["dqn", "lerl+heuristic", "random"]
  assert float(table[1]["cumulative_reward_mean"]) == pytest.approx(2.1)
  assert table[2]["num_seeds_finished"] == "2" and table[0]["reference"] == "dqn"

  for path in comparison_plots.write_all(runs, rows, tmp_path, tmp_path / "out"):
    check_png(path)


def test_cumulative_reward_is_read_against_the_planning_oracle(tmp_path):
  methods = [comparison.Method("dqn"), comparison.Method("planning_oracle")]
  runs = comparison.grid(["interest_evolution"],
                         [comparison.ExitRuleChoice("satisfaction")], methods,
                         num_seeds=3)
  for run in runs:  # cumulative reward base + 0.1 * seed
    write_run(run.directory(tmp_path), run.seed,
              {"dqn": 1.0, "planning_oracle": 2.0}[run.method.agent], False)
  rows = comparison.build_table(runs, tmp_path, methods[0])
  dqn, ceiling = (row.stats["planning_oracle_share"] for row in rows)
  assert dqn["mean"] == pytest.approx(1.1 / 2.1)
  assert ceiling["mean"] == pytest.approx(1.0)
  markdown = comparison.format_markdown(rows, methods[0])
  assert "share of the planning oracle" in markdown
  # Without the planning oracle the column is empty.
  [alone] = comparison.build_table(runs[::2][:2], tmp_path, methods[0])
  assert math.isnan(alone.stats["planning_oracle_share"]["mean"])


def test_each_llm_planner_is_set_against_the_heuristic_under_its_agent(
    tmp_path):
  methods = [comparison.Method("lerl", "embedded"),
             comparison.Method("lerl", "heuristic"),
             comparison.Method("lerl", "ollama:x"), comparison.Method("dqn"),
             comparison.Method("lerl_ppo", "embedded")]
  runs = comparison.grid(["interest_evolution"],
                         [comparison.ExitRuleChoice("satisfaction")], methods,
                         num_seeds=3)
  base = {"embedded": 3.0, "heuristic": 2.0, "ollama:x": 1.0, None: 1.0}
  for run in runs:
    if run.method.label == "lerl+embedded" and run.seed == 2:
      continue  # unfinished: embedded has seeds 0 and 1
    write_run(run.directory(tmp_path), run.seed, base[run.method.planner],
              run.method.planner is not None)
  rows = comparison.build_table(runs, tmp_path, methods[3])
  contrasts = comparison.planner_contrasts(rows)
  # lerl_ppo has one backend and dqn none: only lerl's two LLM backends.
  assert [(c.method.label, c.control.label) for c in contrasts] == [
      ("lerl+embedded", "lerl+heuristic"), ("lerl+ollama:x", "lerl+heuristic")]
  embedded, ollama = contrasts
  # write_run's cumulative reward is base + 0.1 * seed; at 10% and 30% of
  # training, base + 1 + seed and base + 3 + seed.
  assert embedded.differences["cumulative_reward"] == pytest.approx(
      (3.0 + 0.05) - (2.0 + 0.1))
  assert embedded.differences["reward_at_10pct"] == pytest.approx(
      (4.0 + 0.5) - (3.0 + 1.0))
  assert embedded.p_values["reward_at_30pct"] == pytest.approx(
      stats.ttest_ind([6, 7], [5, 6, 7], equal_var=False).pvalue)
  assert ollama.differences["cumulative_reward"] == pytest.approx(-1.0)
  text = comparison.format_all_contrasts(rows, methods[3])
  p = stats.ttest_ind([3.0, 3.1], [2.0, 2.1, 2.2], equal_var=False).pvalue
  planner_section = text[text.index("## What the planner adds"):]
  # At 10%: 4.5 against 4.0; at 100%: 3.05 against 2.1 (+45%).
  assert ("| interest_evolution | satisfaction | lerl+embedded | "
          "lerl+heuristic | +0.50 (+12%, p = ") in planner_section
  assert f"| +0.95 (+45%, p = {p:.3f}) |" in planner_section
  # Without a heuristic run the first backend compared is the control; one
  # backend alone gives no section.
  without = [row for row in rows if row.method.planner != "heuristic"]
  assert [(c.method.label, c.control.label) for c in
          comparison.planner_contrasts(without)] == [
              ("lerl+ollama:x", "lerl+embedded")]
  assert "What the planner adds" not in comparison.format_all_contrasts(
      rows[:1] + rows[3:], methods[3])


def test_each_trained_method_is_set_against_the_reference_at_three_budgets(
    tmp_path):
  runs, _ = write_grid(tmp_path)
  reference = comparison.resolve_reference("dqn", METHODS)
  rows = comparison.build_table(runs, tmp_path, reference)
  # random does not train (no learning curve): lerl+heuristic alone.
  [lerl] = comparison.reference_contrasts(rows, reference)
  assert (lerl.method.label, lerl.control.label) == ("lerl+heuristic", "dqn")
  # Seeds 0-2: at 10% of training 2 + 1 + seed against 1 + 1 + seed, at
  # 30% 2 + 3 + seed against 1 + 3 + seed, at 100% 2 + 0.1 seed against
  # 1 + 0.1 seed.
  assert lerl.differences["reward_at_10pct"] == pytest.approx(1.0)
  assert lerl.control_means["reward_at_10pct"] == pytest.approx(3.0)
  assert lerl.differences["cumulative_reward"] == pytest.approx(1.0)
  p = stats.ttest_ind([4, 5, 6], [3, 4, 5], equal_var=False).pvalue
  assert lerl.p_values["reward_at_10pct"] == pytest.approx(p)
  text = comparison.format_all_contrasts(rows, reference)
  assert text.startswith("## Against the reference `dqn`")
  assert (f"| lerl+heuristic | dqn | +1.00 (+33%, p = {p:.3f}) | "
          "+1.00 (+20%, p = ") in text
  assert "+1.00 (+91%, p = 0.000) |" in text
  assert "What the planner adds" not in text  # one backend per agent
  # Without the reference's runs there is nothing to set against.
  assert comparison.reference_contrasts(rows[3:], reference) == []


def test_seed_mean_curves_compare_with_the_reference_at_each_evaluation(
    tmp_path):
  runs, _ = write_grid(tmp_path)
  reference = comparison.resolve_reference("dqn", METHODS)
  curves = comparison.build_curves(runs, tmp_path, reference)
  # random does not train; a seed's curve is base + t + seed at t = 1, 3, 10.
  assert [c.method.label for c in curves] == ["dqn", "lerl+heuristic"]
  dqn, lerl = curves
  assert dqn.iterations == [1, 3, 10] and dqn.user_steps == [64, 192, 640]
  assert [p["mean"] for p in dqn.points] == pytest.approx([3.0, 5.0, 12.0])
  assert [p["mean"] for p in lerl.points] == pytest.approx([4.0, 6.0, 13.0])
  # Seeds 0-2 spread by 1: half-width t(0.975, 2) / sqrt(3).
  assert lerl.points[0]["ci95"] == pytest.approx(4.3027 / 3 ** 0.5, abs=1e-3)
  assert lerl.points[0]["p"] == pytest.approx(stats.ttest_ind(
      [3, 4, 5], [2, 3, 4], equal_var=False).pvalue)
  assert all(math.isnan(p["p"]) for p in dqn.points)
  assert lerl.levelled_off is False  # 3 evaluations: too few for the rule
  text = comparison.format_curves(curves, reference)
  assert "### interest_evolution — exit rule satisfaction" in text
  assert ("- **lerl+heuristic** (3 seeds; levelled off: no): 4.00 ± 2.48 at 1;"
          in text)


def test_seed_mean_curve_is_judged_with_the_across_seed_intervals(tmp_path):
  method = comparison.Method("dqn")
  runs = comparison.grid(["interest_evolution"],
                         [comparison.ExitRuleChoice("satisfaction")], [method],
                         num_seeds=3)

  def write_curves(shapes):
    for run in runs:
      directory = run.directory(tmp_path)
      directory.mkdir(parents=True, exist_ok=True)
      (directory / "summary.json").write_text(json.dumps({"learning_curve": {
          "iterations": [1, 2, 3, 4, 5, 6], "mean": shapes[run.seed]}}))
    [curve] = comparison.build_curves(runs, tmp_path, method)
    return curve

  # Mean 1, 2, 3, 3, 3, 3: the last window gains 1 over the one before;
  # the seeds differ only at evaluations 4 and 5 (4, 2, 3: half-width
  # 4.303 / sqrt(3) = 2.48), so the margin is sqrt(2 * 2.48^2) / 3 = 1.17.
  flat = write_curves({0: [1, 2, 3, 4, 2, 3], 1: [1, 2, 3, 2, 4, 3],
                       2: [1, 2, 3, 3, 3, 3]})
  assert [p["mean"] for p in flat.points] == pytest.approx([1, 2, 3, 3, 3, 3])
  assert flat.levelled_off is True
  assert flat.user_steps == [None] * 6
  # Rising by 1 per evaluation, seeds 0.1 apart: gain 3, margin 0.2.
  rising = write_curves({seed: [x + 0.1 * seed for x in range(6)]
                         for seed in range(3)})
  assert rising.levelled_off is False


@pytest.mark.parametrize("changes, message", [
    ({"agents": ["dqn", "sarsa"]}, r"--agents: unknown agent 'sarsa'"),
    ({"agents": ["dqn", "dqn"]}, r"--agents lists \['dqn'\] more than once"),
    ({"agents": ["dqn+heuristic"]}, r"pins a planner, but 'dqn' takes none"),
    ({"scenarios": ["mars"]}, r"--scenarios: unknown \['mars'\]"),
    ({"exit_rule_names": ["boredom"]}, r"unknown exit rule 'boredom'"),
    ({"exit_rule_names": ["category_window:cirs"]},
     r"'category_window:cirs': unknown preset 'cirs'"),
    ({"agents": ["lerl"], "planners": ["gpt"]},
     r"--planners: unknown backend 'gpt'; expected embedded"),
    ({"agents": ["lerl"], "planners": ["gguf:/no/such.gguf"]},
     r"'gguf:/no/such.gguf' names no file"),
    ({"num_seeds": 0}, r"--num_seeds must be an int >= 1, got 0"),
    ({"parallel": 0}, r"--parallel must be an int >= 1, got 0"),
    ({"first_seed": -1}, r"--first_seed must be an int >= 0, got -1"),
    ({"train": {**TRAIN, "num_iterations": 0}},
     r"num_iterations must be an int >= 1, got 0"),
    ({"reference": "ppo"}, r"reference 'ppo' is not a compared method"),
    ({"agents": ["lerl", "random"], "planners": ["heuristic", "fake-x"],
      "reference": "lerl"}, r"unknown backend 'fake-x'"),
    ({"scenario_flags": {"num_items": 0}}, 
     r"ScenarioParams.num_items=0 is out of range; expected \[1, inf\]"),
])
def test_bad_input_is_named_before_any_run(changes, message):
  arguments = dict(agents=["dqn", "random"], scenarios=["interest_evolution"],
                   exit_rule_names=["satisfaction"], planners=["heuristic"],
                   num_seeds=2, parallel=1, reference="dqn", train=TRAIN,
                   scenario_flags={})
  arguments.update(changes)
  with pytest.raises(ValueError, match=message):
    setup.plan(**arguments)


def test_exit_rules_parse_into_make_env_arguments():
  rules = setup.parse_exit_rules(["satisfaction", "category_window:dorl"])
  assert [(r.name, r.params) for r in rules] == [
      ("satisfaction", {}), ("category_window", {"preset": "dorl"})]
  with pytest.raises(ValueError, match=r"--exit_rules lists \['temper'\] more"):
    setup.parse_exit_rules(["temper", "temper"])


def test_ambiguous_reference():
  methods = setup.agent_methods(["lerl", "dqn"], ["heuristic", "openai:m"])
  assert [m.label for m in methods] == ["lerl+heuristic", "lerl+openai:m", "dqn"]
  with pytest.raises(ValueError, match=r"reference 'lerl' is ambiguous"):
    comparison.resolve_reference("lerl", methods)
  assert comparison.resolve_reference("lerl+heuristic", methods) == methods[0]


def test_output_dir_of_another_comparison_or_a_running_one_is_refused(tmp_path):
  config, _, _ = setup.plan(["random"], ["interest_evolution"], ["satisfaction"],
                            [], 1, 1, "random", TRAIN, {})
  lock = setup.claim(tmp_path, config)
  assert json.loads((tmp_path / "comparison.json").read_text())["agents"] == [
      "random"]
  with pytest.raises(ValueError, match=r"another lerl-compare is running in"):
    setup.claim(tmp_path, config)
  os.close(lock)
  with pytest.raises(ValueError, match=r"--output_dir: .* different "
                     r"configuration \(differs in \['train'\]\)"):
    setup.claim(tmp_path, {**config, "train": {**TRAIN, "num_users": 9}})


def test_a_comparison_grows_by_methods_and_seeds_and_nothing_else(tmp_path):
  config, _, _ = setup.plan(["random"], ["interest_evolution"], ["satisfaction"],
                            [], 1, 1, "random", TRAIN, {})
  os.close(setup.claim(tmp_path, config))
  grown, _, _ = setup.plan(["random", "oracle"], ["interest_evolution"],
                           ["satisfaction", "temper"], [], 2, 1, "random",
                           TRAIN, {})
  said = []
  os.close(setup.claim(tmp_path, grown, said.append))
  assert said == [f"the comparison in {tmp_path} grows: agent oracle, "
                  "exit_rule temper, seeds 1-1; its finished runs are reused"]
  saved = json.loads((tmp_path / "comparison.json").read_text())
  assert saved["agents"] == ["random", "oracle"] and saved["num_seeds"] == 2
  # Fewer seeds, or a method dropped, is another comparison.
  for other in ({**grown, "num_seeds": 1}, {**grown, "agents": ["oracle"]}):
    with pytest.raises(ValueError, match="different configuration"):
      setup.claim(tmp_path, other)
  assert json.loads((tmp_path / "comparison.json").read_text()) == saved
  assert setup.additions({"a": 1, "agents": ["x"]},
                         {"a": 2, "agents": ["x", "y"]}) is None


def test_development_seeds_are_their_own_comparison(tmp_path):
  config, runs, _ = setup.plan(["random"], ["interest_evolution"],
                               ["satisfaction"], [], 2, 1, "random", TRAIN,
                               {}, first_seed=100)
  assert config["first_seed"] == 100
  assert [run.seed for run in runs] == [100, 101]
  assert [run.relative_path.name for run in runs] == ["seed_100", "seed_101"]
  os.close(setup.claim(tmp_path, config))
  grown, _, _ = setup.plan(["random"], ["interest_evolution"],
                           ["satisfaction"], [], 3, 1, "random", TRAIN, {},
                           first_seed=100)
  said = []
  os.close(setup.claim(tmp_path, grown, said.append))
  assert said == [f"the comparison in {tmp_path} grows: seeds 102-102; its "
                  "finished runs are reused"]
  # The reported seeds from 0 are another comparison, and record no key.
  reported, runs, _ = setup.plan(["random"], ["interest_evolution"],
                                 ["satisfaction"], [], 3, 1, "random", TRAIN,
                                 {})
  assert "first_seed" not in reported and [r.seed for r in runs] == [0, 1, 2]
  with pytest.raises(ValueError, match=r"differs in \['first_seed'\]"):
    setup.claim(tmp_path, reported)


def test_a_comparison_at_the_codes_budgets_refuses_other_budgets(
    tmp_path, monkeypatch):
  by_family = {**TRAIN, "num_iterations": None, "eval_interval": None,
               "checkpoint_interval": None, "log_interval": None}
  plan = functools.partial(setup.plan, scenarios=["interest_evolution"],
                           exit_rule_names=["satisfaction", "temper"],
                           planners=[], num_seeds=1, parallel=1,
                           reference="random", train=by_family,
                           scenario_flags={})
  config, _, _ = plan(["dqn", "random"])
  assert config["budgets"] == {
      "satisfaction": {"dqn": run_config.CONVERGENCE_BUDGETS["dqn"],
                       "random": 1},
      "temper": {"dqn": run_config.EXIT_RULE_BUDGETS[("dqn", "temper")],
                 "random": 1}}
  os.close(setup.claim(tmp_path, config))
  grown, _, _ = plan(["dqn", "random", "oracle"])  # a method more: reused
  os.close(setup.claim(tmp_path, grown, lambda _: None))
  monkeypatch.setitem(run_config.CONVERGENCE_BUDGETS, "dqn", 123)
  chosen_again, _, _ = plan(["dqn", "random", "oracle"])
  assert chosen_again["budgets"]["satisfaction"]["dqn"] == 123
  with pytest.raises(ValueError, match=r"differs in \['budgets'\]"):
    setup.claim(tmp_path, chosen_again)
  # A fixed --num_iterations is the budget itself, in "train".
  fixed, _, _ = setup.plan(["dqn"], ["interest_evolution"], ["satisfaction"],
                           [], 1, 1, "dqn", TRAIN, {})
  assert "budgets" not in fixed


def processes_mentioning(text: str) -> list[str]:
  found = []
  for entry in pathlib.Path("/proc").iterdir():
    try:
      command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
      continue
    if text in command and entry.name != str(os.getpid()):
      found.append(command)
  return found


def test_tiny_comparison_crashes_is_killed_resumes_and_tabulates(tmp_path):
  output = tmp_path / "cmp"
  command = [sys.executable, "-m", "lerl_recsim.binaries.compare",
             "--agents=random,dqn", "--num_seeds=2", "--num_items=40",
             "--parallel=2", f"--output_dir={output}"] + [
                 f"--{k}={v}" for k, v in TRAIN.items() if k != "replan_every"]
  environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  runs = {(r.method.agent, r.seed): r for r in comparison.grid(
      ["interest_evolution"], [comparison.ExitRuleChoice("satisfaction")],
      [comparison.Method("random"), comparison.Method("dqn")], 2)}
  # A run that will crash: its directory holds another run's configuration.
  broken = runs["random", 1].directory(output)
  broken.mkdir(parents=True)
  (broken / "config.json").write_text('{"another": "run"}')

  sweep = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
  # Seed-major order: random/0 and dqn/0, then random/1 (crashes), then
  # dqn/1, which is stopped once it has a checkpoint.
  checkpoint = (runs["dqn", 1].directory(output) / "train" / "checkpoints" /
                "checkpoint")
  deadline = time.monotonic() + 240
  while not checkpoint.exists():
    assert sweep.poll() is None and time.monotonic() < deadline, "no checkpoint"
    time.sleep(0.2)
  sweep.send_signal(signal.SIGTERM)
  first_output, _ = sweep.communicate(timeout=60)
  assert sweep.returncode == 128 + signal.SIGTERM, first_output
  assert "FAILED interest_evolution/satisfaction/random/seed 1" in first_output
  assert "different configuration" in runs["random", 1].log(output).read_text()
  assert not processes_mentioning(str(output))  # the runs were stopped too
  # random/1 started when random/0 or dqn/0 had finished (on a loaded
  # machine either can be first).
  finished = [path for path in (runs[agent, 0].directory(output) /
                                "summary.json" for agent in ("random", "dqn"))
              if path.exists()]
  assert finished, first_output
  finished = finished[0]
  reused_mtime = finished.stat().st_mtime_ns
  assert not (runs["dqn", 1].directory(output) / "summary.json").exists()
  reusable = sum((r.directory(output) / "summary.json").exists()
                 for r in runs.values())

  (broken / "config.json").unlink()  # repaired: the rerun retries it
  second = subprocess.run(command, env=environment, capture_output=True,
                          text=True, timeout=300)
  assert second.returncode == 0, second.stderr[-3000:]
  assert f"{reusable} finished run(s) reused" in second.stderr
  assert finished.stat().st_mtime_ns == reused_mtime
  assert "resuming" in runs["dqn", 1].log(output).read_text()

  summaries = {key: json.loads((r.directory(output) / "summary.json").read_text())
               for key, r in runs.items()}
  for summary in summaries.values():
    curve = summary["exposure_curve"]
    assert curve["active_sessions"][0] == summary["num_sessions"] == 10
    assert curve["category_coverage"][0] == 1.0  # one single-category item
    assert min(curve["active_sessions"]) > 0
    assert np.all(np.diff(curve["active_sessions"]) <= 0)
  table = {row["method"]: row for row in
           csv.DictReader((output / "results.csv").read_text().splitlines())}
  for agent in ("random", "dqn"):
    for name in ("cumulative_reward", "interaction_length", "repetition_rate"):
      values = [summaries[agent, s][name]["mean"] for s in (0, 1)]
      mean, ci95 = hand_ci95(values)
      assert float(table[agent][f"{name}_mean"]) == pytest.approx(mean)
      assert float(table[agent][f"{name}_ci95"]) == pytest.approx(ci95)
  rewards = {agent: [summaries[agent, s]["cumulative_reward"]["mean"]
                     for s in (0, 1)] for agent in ("random", "dqn")}
  assert float(table["random"]["cumulative_reward_p_vs_reference"]) == (
      pytest.approx(stats.ttest_ind(rewards["random"], rewards["dqn"],
                                    equal_var=False).pvalue, nan_ok=True))
  markdown = (output / "results.md").read_text()
  assert "| dqn (reference) | 2/2 |" in markdown and "lerl-compare --agents" in markdown
  for name in ("learning_curves", "category_exposure", "results_bars"):
    check_png(output / f"{name}.png")

  # The same directory with another configuration: refused, nothing run.
  refused = subprocess.run(command + ["--num_seeds=1"], env=environment,
                           capture_output=True, text=True, timeout=120)
  assert refused.returncode == 2
  assert "different configuration (differs in ['num_seeds'])" in refused.stderr
