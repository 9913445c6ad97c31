"""Evaluating a saved policy on any scenario, exit rule and planner.

The library of lerl-eval (see that binary for how settings combine with the
source's); kept apart from it so that importing it defines no flags.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

from tf_agents.policies import py_tf_eager_policy
from tf_agents.specs import tensor_spec

import lerl_recsim
from lerl_recsim import bundle, evaluation, metrics, planner_environment, results
from lerl_recsim.experiments import (checkpoints, evaluations, export,
                                     planner_counts, run_config)


def load_source(load_dir: str | os.PathLike[str]
                ) -> tuple[dict[str, Any], pathlib.Path, pathlib.Path | None]:
  """(planner spec, policy directory, reflection pool path or None)."""
  root = pathlib.Path(load_dir)
  if (root / bundle.SPEC_FILE).is_file():
    spec = bundle.read_spec(root)
    reflections = spec["planner"]["reflections"]
    return (spec, root / bundle.POLICY_DIR,
            root / reflections if reflections else None)
  config = export.read_run_config(root)
  directory = checkpoints.RunDirectory(os.fspath(root))
  scenario = export.rebuild_scenario(config, f"run {os.fspath(root)!r}")
  reflections = (directory.reflections if directory.reflections.is_file()
                 else None)
  return (export.build_spec(config, scenario, reflections is not None),
          directory.policy, reflections)


def resolve_overrides(spec: Mapping[str, Any], scenario: str,
                      overrides: Mapping[str, Any]) -> dict[str, Any]:
  """The source's overrides (same scenario only) updated by `overrides`."""
  source = spec["source"]
  resolved = (dict(source["scenario_overrides"])
              if scenario == source["scenario"] else {})
  rule = overrides.get("exit_rule")
  if rule is not None and rule != spec["scenario"]["config"].get("exit_rule"):
    resolved.pop("exit_params", None)
  resolved.update(overrides)
  return resolved


def evaluate(load_dir: str | os.PathLike[str],
             output: str | os.PathLike[str], *,
             scenario: str | None = None,
             overrides: Mapping[str, Any] | None = None,
             planner: str | None = None,
             replan_every: int | None = None,
             num_eval_sessions: int = run_config.RunConfig.num_eval_sessions,
             seed: int = 0) -> dict[str, Any]:
  """Evaluates the policy of `load_dir`; writes and returns the summary.

  Args:
    load_dir: A training run or a serving bundle.
    output: The summary's JSON path; refused if it exists.
    scenario, overrides: The scenario and its overrides (see lerl-eval's
      docstring for how they combine with the source's).
    planner: A backend string, "none", or None for the source's backend.
    replan_every: K, or None for the source's.
    num_eval_sessions: Fresh users, one session each.
    seed: Seeds the users (+ evaluations.EVAL_SEED_OFFSET) and the planner.
  """
  output = pathlib.Path(output)
  if output.exists():
    raise FileExistsError(f"--output {os.fspath(output)!r} already exists; "
                          "choose a new path (nothing was overwritten)")
  spec, policy_dir, reflections = load_source(load_dir)
  policy, signature = bundle.load_policy(policy_dir)
  scenario = scenario or spec["source"]["scenario"]
  resolved = resolve_overrides(spec, scenario, overrides or {})
  env = lerl_recsim.make_env(scenario, num_users=num_eval_sessions,
                             seed=seed + evaluations.EVAL_SEED_OFFSET, **resolved)
  signature.check(bundle.ScenarioFacts.from_scenario(env.scenario),
                  f"scenario {scenario!r} with overrides {resolved}")
  backend = spec["planner"]["backend"] if planner is None else planner
  if backend == bundle.NO_PLANNER:
    backend = None
  if replan_every is None:
    replan_every = (spec["planner"]["replan_every"]
                    or planner_environment.DEFAULT_REPLAN_EVERY)
  if backend is not None:
    planner_environment.check_replan_every(replan_every)
    if (list(env.scenario.catalogue.category_names)
        != spec["catalogue"]["category_names"]):
      raise ValueError(
          f"scenario {scenario!r} has the categories "
          f"{list(env.scenario.catalogue.category_names)}; the policy's "
          f"planner plans over {spec['catalogue']['category_names']}")
    # Planned as lerl-train's evaluation is: the saved lessons are read,
    # none are written about evaluation sessions.
    planned_by = bundle.planner_from_spec(spec, backend, reflections, seed)
    env = planner_environment.make_planned_env(
        env, planned_by.evaluation_view(), replan_every, seed=seed)
  py_policy = py_tf_eager_policy.PyTFEagerPolicyBase(
      policy, tensor_spec.from_spec(env.time_step_spec()),
      tensor_spec.from_spec(env.action_spec()), policy_state_spec=(),
      info_spec=(), batch_time_steps=False)
  summary: dict[str, Any] = metrics.summarise(
      evaluation.evaluate_sessions(env, py_policy))
  summary["config"] = {
      "load_dir": os.fspath(load_dir), "agent": spec["source"]["agent"],
      "scenario": dict(env.scenario.config), "planner": backend,
      "replan_every": replan_every if backend is not None else None,
      "num_eval_sessions": num_eval_sessions, "seed": seed,
      "lerl_recsim_version": lerl_recsim.__version__}
  summary["config"]["scenario"].pop("num_users", None)
  summary["planner"] = planner_counts.planner_counts(env)
  if output.exists():
    raise FileExistsError(f"--output {os.fspath(output)!r} appeared during "
                          "the evaluation; nothing was overwritten")
  results.write_json_atomic(output, summary)
  return summary
