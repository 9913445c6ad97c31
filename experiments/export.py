"""Writing a serving bundle from a training run (the library of lerl-export).

Also used by lerl-eval, which reads a run as if it were a bundle; kept apart
from the binary so that importing it defines no flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import uuid
from typing import Any, Mapping

import lerl_recsim
from lerl_recsim import bundle, planner_environment
from lerl_recsim.experiments import checkpoints
from lerl_recsim.planner import PlanRules, ReflectionPool
from lerl_recsim.scenarios import registry


def read_run_config(root_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """The run's config.json, with clear errors for what is not a run."""
  root = pathlib.Path(root_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"run directory {os.fspath(root_dir)!r} does not "
                            "exist (expected the --root_dir of lerl-train)")
  path = root / "config.json"
  if not path.is_file():
    raise FileNotFoundError(
        f"{os.fspath(root_dir)!r} is not a training run: {path} is missing")
  try:
    config = json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON ({error})") from None
  if not isinstance(config, dict) or not isinstance(config.get("run"), dict):
    raise ValueError(f"{path} holds no 'run' section; expected the "
                     "config.json that lerl-train writes")
  return config


def rebuild_scenario(config: Mapping[str, Any], source: str) -> Any:
  """The run's scenario, checked to be the one it was trained on."""
  run = config["run"]
  scenario = registry.build_scenario(run["scenario"], num_users=1,
                                     seed=run["seed"],
                                     **run["scenario_overrides"])
  rebuilt = json.loads(json.dumps(dict(scenario.config), default=str))
  rebuilt.pop("num_users", None)
  saved = config.get("scenario", {})
  changed = sorted(key for key in set(saved) | set(rebuilt)
                   if saved.get(key) != rebuilt.get(key))
  if changed:
    raise ValueError(
        f"the scenario rebuilt from {source}'s configuration differs from "
        f"the one it was trained on in {changed}; was the package or the "
        "scenario's data changed since?")
  return scenario


def build_spec(config: Mapping[str, Any], scenario: Any,
               has_reflections: bool) -> dict[str, Any]:
  """The planner spec of a run: only data written here, never a secret."""
  run = config["run"]
  rules = PlanRules()  # make_planned_env plans with the default rules.
  options = planner_environment.default_planner_options(
      run["planner"] or "heuristic")
  return {
      "format": bundle.FORMAT,
      "lerl_recsim_version": lerl_recsim.__version__,
      "source": {key: run[key] for key in
                 ("agent", "scenario", "scenario_overrides", "seed")},
      "planner": {
          "backend": run["planner"],
          "replan_every": run["replan_every"],
          "seed": run["seed"],
          "rules": dataclasses.asdict(rules),
          "prompt_config": dataclasses.asdict(options["prompt_config"]),
          # None: the planner writes no lessons.
          "reflect_every": options.get("reflect_every"),
          "reflect_growth": options.get("reflect_growth"),
          "prompt_template": bundle.prompt_template(scenario.catalogue, rules),
          "reflections": bundle.REFLECTIONS_FILE if has_reflections else None,
      },
      "catalogue": bundle.catalogue_to_json(scenario.catalogue),
      "scenario": {**bundle.ScenarioFacts.from_scenario(scenario).to_json(),
                   "config": config.get("scenario", {})},
  }


def check_export_dir(export_dir: pathlib.Path) -> None:
  if export_dir.exists() and (not export_dir.is_dir()
                              or any(export_dir.iterdir())):
    raise FileExistsError(
        f"export directory {os.fspath(export_dir)!r} already exists and is "
        "not empty; choose a new --export_dir (nothing was written)")


def export_bundle(root_dir: str | os.PathLike[str],
                  export_dir: str | os.PathLike[str]) -> pathlib.Path:
  """Writes the run's serving bundle to `export_dir`; returns its path.

  Everything is checked and written in a temporary sibling directory first,
  then renamed into place, so a failure leaves no partial bundle.
  """
  target = pathlib.Path(export_dir)
  check_export_dir(target)
  config = read_run_config(root_dir)
  directory = checkpoints.RunDirectory(os.fspath(root_dir))
  if not (directory.policy / "saved_model.pb").is_file():
    raise FileNotFoundError(
        f"run {os.fspath(root_dir)!r} has no exported policy "
        f"({directory.policy / 'saved_model.pb'} is missing); has its "
        "training finished?")
  _, signature = bundle.load_policy(directory.policy)
  scenario = rebuild_scenario(config, f"run {os.fspath(root_dir)!r}")
  facts = bundle.ScenarioFacts.from_scenario(scenario)
  signature.check(facts, f"run {os.fspath(root_dir)!r}'s scenario")
  pool = (ReflectionPool.load(directory.reflections)
          if directory.reflections.is_file() else None)
  spec = build_spec(config, scenario, pool is not None)

  target.parent.mkdir(parents=True, exist_ok=True)
  # Private until renamed, so plain writes suffice (and keep the umask's
  # permissions, which temporary files would not).
  staging = target.parent / f".{target.name}.export-{uuid.uuid4().hex}"
  staging.mkdir()
  try:
    shutil.copytree(directory.policy, staging / bundle.POLICY_DIR)
    (staging / bundle.SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    if pool is not None:
      shutil.copyfile(directory.reflections, staging / bundle.REFLECTIONS_FILE)
    check_export_dir(target)
    os.rename(staging, target)  # Replaces only an empty directory.
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return target
