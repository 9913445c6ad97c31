"""gin configuration of the binaries: --gin_file and --gin_bindings.

Agent hyper-parameters reach the agents through gin itself: each learning
family's `Hyperparameters` is gin-configurable under the name
`<family>.train_eval` (`dqn.train_eval.learning_rate = 1e-3`).
The scenario's parameter records (`ScenarioParams`, `UserParams`, each exit
rule's `*Params`, and for data-driven scenarios `CalibrationParams`,
`DataFormat` and `build_calibrated`) are registered with gin but left
unchanged: what gin binds for them becomes the run's scenario overrides,
the one way a scenario is built, so that config.json, exported bundles and
lerl-eval see every value a run used. Each record's defaults stay where they
are written, in its class or signature.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable, Mapping, Sequence

import gin
from absl import flags

from lerl_recsim.agents.registry import LEARNING_FAMILIES
from lerl_recsim.scenarios import calibrated, calibration, exit_rules
from lerl_recsim.scenarios import interest_evolution, params, ratings_data
from lerl_recsim.scenarios import user as user_lib

flags.DEFINE_multi_string(
    "gin_file", [], "gin file of agent hyper-parameters and scenario "
    "parameters (repeatable; examples in configs/).")
flags.DEFINE_multi_string(
    "gin_bindings", [], "gin binding, after the files: e.g. "
    "'dqn.train_eval.learning_rate = 1e-3', "
    "'TemperParams.initial_temper = 10' (repeatable).")

HYPERPARAMETERS: Mapping[str, type] = {
    f"{name}.train_eval": family.Hyperparameters
    for name, family in LEARNING_FAMILIES.items()}
# build_calibrated's other arguments come from the scenario, not the user.
DATA_LOCATION = ("groups_file", "cache_dir", "num_groups")
SCENARIO_RECORDS = (interest_evolution.ScenarioParams, user_lib.UserParams,
                    *(spec.params_class for spec in
                      exit_rules.EXIT_RULES.values()),
                    calibration.CalibrationParams, ratings_data.DataFormat)
for record in SCENARIO_RECORDS:
  gin.register(record)
gin.register(calibrated.build_calibrated, allowlist=DATA_LOCATION)

# Records read only by the data-driven scenarios, flat among their overrides.
DATA_RECORDS: Mapping[str, tuple[Any, ...]] = {
    "movielens": (calibration.CalibrationParams, calibrated.build_calibrated),
    "ratings_csv": (calibration.CalibrationParams, calibrated.build_calibrated,
                    ratings_data.DataFormat),
}
# Scenario flags of the binaries that set a ScenarioParams field.
SCENARIO_FLAGS = ("num_items", "slate_size", "max_session_length")


def accepted_parameters() -> dict[str, list[str]]:
  """Each configurable's name and the parameters a binding may set."""
  accepted = {name: [f.name for f in dataclasses.fields(record)]
              for name, record in HYPERPARAMETERS.items()}
  for record in SCENARIO_RECORDS:
    accepted[record.__name__] = [f.name for f in dataclasses.fields(record)]
  accepted[calibrated.build_calibrated.__name__] = list(DATA_LOCATION)
  return accepted


def _parse(source: str, parse: Callable[[], Any]) -> None:
  """Runs one gin parse; its error becomes one line naming `source` and
  what is accepted."""
  try:
    parse()
  except (ValueError, SyntaxError, TypeError, KeyError) as error:
    message = str(error).splitlines()[0] if str(error) else repr(error)
    accepted = accepted_parameters()
    named = [name for name in accepted if f"'{name}'" in message]
    if "No configurable matching" in message:
      hint = f"configurables: {sorted(accepted)}"
    elif "parameter named" in message and named:
      hint = f"parameters of {named[0]}: {accepted[named[0]]}"
    else:
      hint = "expected CONFIGURABLE.PARAMETER = PYTHON_LITERAL"
    raise ValueError(f"{source}: {message}; {hint}") from None


def bound_parameters() -> dict[str, Any]:
  """`{"CONFIGURABLE.PARAMETER": value}` of every binding in effect."""
  bound = {}
  for name in accepted_parameters():
    for parameter, value in gin.get_bindings(name).items():
      bound[f"{name}.{parameter}"] = value
  return dict(sorted(bound.items()))


def parse(files: Sequence[str], bindings: Sequence[str]) -> dict[str, Any]:
  """Replaces gin's configuration with `files` then `bindings`; returns
  `bound_parameters()`.

  Raises ValueError (one line) for a missing file, a binding gin cannot
  parse, a configurable or parameter that is not the project's, a scoped
  binding, or a hyper-parameter of the wrong type.
  """
  gin.clear_config()
  for path in files:
    if not os.path.isfile(path):
      raise ValueError(f"--gin_file {path!r} is not a file")
    _parse(f"--gin_file {path!r}", lambda: gin.parse_config_file(path))
  for binding in bindings:
    _parse(f"--gin_bindings {binding!r}", lambda: gin.parse_config(binding))
  accepted = accepted_parameters()
  for line in gin.config_str().splitlines():
    if line.startswith("# Parameters for "):
      selector = line[len("# Parameters for "):-1]
      if "/" in selector or not any(name == selector or name.endswith(
          "." + selector) for name in accepted):
        raise ValueError(
            f"gin binds {selector}, which is not one of lerl's configurables "
            f"(scopes are not used); configurables: {sorted(accepted)}")
  for name, record in HYPERPARAMETERS.items():
    signature = inspect.signature(record).parameters
    for parameter, value in gin.get_bindings(name).items():
      try:
        params.check_value(f"{name}.{parameter}",
                           signature[parameter].annotation, value)
      except TypeError as error:
        raise ValueError(str(error)) from None
  return bound_parameters()


def _checked(record: Any, parameter: str, flag: str) -> None:
  """One way per parameter: refuses one that `flag` sets and gin binds."""
  if parameter in gin.get_bindings(record):
    raise ValueError(
        f"{record.__name__}.{parameter} is bound by gin and set by {flag}; "
        "set it one way")


def scenario_overrides(
    scenario: str, exit_rule: str | None = None,
    flag_values: Mapping[str, Any] | None = None,
    default_exit_rule: str = interest_evolution.ScenarioParams.exit_rule
) -> dict[str, Any]:
  """The scenario overrides of a run: the binaries' scenario flags and
  every scenario parameter gin binds.

  Args:
    scenario: the scenario's registered name.
    exit_rule: the --exit_rule flag, NAME or NAME:PRESET (None: unset).
    flag_values: SCENARIO_FLAGS and data_dir as flags give them (None:
      unset).
    default_exit_rule: the rule whose parameters gin may bind when neither
      the flag nor gin names one.
  Raises ValueError when a parameter is set by a flag and bound by gin, or
  by a preset and bound by gin.
  """
  overrides: dict[str, Any] = {}
  for name, value in (flag_values or {}).items():
    if value is not None:
      if name in SCENARIO_FLAGS:
        _checked(interest_evolution.ScenarioParams, name, f"--{name}")
      overrides[name] = value
  preset = None
  if exit_rule is not None:
    _checked(interest_evolution.ScenarioParams, "exit_rule", "--exit_rule")
    overrides["exit_rule"], _, preset = exit_rule.partition(":")
  overrides.update(gin.get_bindings(interest_evolution.ScenarioParams))
  rule = overrides.get("exit_rule", default_exit_rule)
  if rule not in exit_rules.EXIT_RULES:
    raise ValueError(f"unknown exit rule {rule!r}; accepted: "
                     f"{sorted(exit_rules.EXIT_RULES)}")
  rule_params = exit_rules.EXIT_RULES[rule].params_class
  exit_params = gin.get_bindings(rule_params)
  if preset:
    exit_rules.resolve_exit_rule(rule, {"preset": preset}, None)
    for parameter in exit_rules.CATEGORY_WINDOW_PRESETS[preset]:
      if parameter != "max_session_length":
        _checked(rule_params, parameter, f"--exit_rule={exit_rule}")
    exit_params = {"preset": preset, **exit_params}
  if exit_params:
    overrides["exit_params"] = exit_params
  user_params = gin.get_bindings(user_lib.UserParams)
  if user_params:
    overrides["user_params"] = user_params
  for record in DATA_RECORDS.get(scenario, ()):
    overrides.update(gin.get_bindings(record))
  return overrides


def check_scenario(scenario: str, overrides: Mapping[str, Any]
                   ) -> params.Params:
  """Builds the scenario's parameter records from `overrides`, so that a
  bad value is a ValueError naming it; returns the exit rule's."""
  scenario_fields = {f.name for f in dataclasses.fields(
      interest_evolution.ScenarioParams)}
  try:
    interest_evolution.ScenarioParams(**{
        name: overrides[name] for name in scenario_fields & set(overrides)})
    user_lib.UserParams(**overrides.get("user_params", {}))
    for record in DATA_RECORDS.get(scenario, ()):
      if isinstance(record, type) and issubclass(record, params.Params):
        record(**{f.name: overrides[f.name] for f in dataclasses.fields(record)
                  if f.name in overrides})
    return exit_rules.resolve_exit_rule(
        overrides.get("exit_rule", interest_evolution.ScenarioParams.exit_rule),
        overrides.get("exit_params"), None)[1]
  except TypeError as error:
    raise ValueError(str(error)) from None


def record_scenario(scenario: str, overrides: Mapping[str, Any]) -> None:
  """Checks `overrides` (`check_scenario`), binds the values they give
  that gin does not bind (flags, presets) and builds the scenario's records
  through gin, so that gin's operative configuration lists every scenario
  parameter the run uses."""
  rule = check_scenario(scenario, overrides)
  values = {interest_evolution.ScenarioParams: overrides,
            user_lib.UserParams: overrides.get("user_params", {}),
            type(rule): rule.to_dict()}
  for record, given in values.items():
    fields = {f.name for f in dataclasses.fields(record)}
    for name in fields & set(given) - set(gin.get_bindings(record)):
      gin.bind_parameter(f"{record.__name__}.{name}", given[name])
    gin.get_configurable(record)()
