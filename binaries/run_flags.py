"""The training run's flags, generated from `RunConfig`.

Each flag's default is its `RunConfig` field's (written once, there), so
lerl-train, lerl-compare and the main job cannot drift apart; a binary that
means another default (lerl-compare waits for its planners) passes it
explicitly. The scenario flags set `ScenarioParams` fields and default to
the scenario's own values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from absl import flags

from lerl_recsim.experiments import run_config

# Help of each RunConfig field a binary may expose as a flag.
HELP: Mapping[str, str] = {
    "planner": ("Planner backend of the planning agents (lerl, lerl_ppo): "
                "embedded, gguf:PATH, openai:MODEL, ollama:MODEL, heuristic."),
    "replan_every": "K: steps between a user's plans (1 is LERL).",
    "num_users": "Simultaneous training users.",
    "num_iterations": ("Training iterations (default: the agent family's "
                       "convergence budget, " + run_config.budgets_text() +
                       ")."),
    "num_eval_sessions": "Fresh users per evaluation.",
    "eval_interval": ("Iterations between evaluations (default: "
                      f"{run_config.CURVE_POINTS} per run)."),
    "checkpoint_interval": ("Iterations between checkpoints (default: as "
                            "--eval_interval)."),
    "log_interval": ("Iterations between progress lines (default: as "
                     "--eval_interval)."),
    "seed": "Seed of environments, networks, exploration.",
    "planner_cache": ("SQLite file caching the LLM planner's answers across "
                      "runs (needs langchain-community)."),
    "planner_mode": ("background: training never waits for the LLM (users it "
                     "has not answered yet get the heuristic plan meanwhile); "
                     "wait: training waits, and the run repeats exactly. "
                     "Evaluation plans in the same mode."),
    "intra_op_threads": ("Threads TensorFlow gives one op (0: TensorFlow's "
                         "choice, one per core); part of a run's identity."),
    "stop_when_levelled": ("End training at the first evaluation at which the "
                           "learning curve has levelled off (the plateau "
                           "rule), or after --num_iterations."),
}
# ScenarioParams fields the binaries set by flag (None: the scenario's).
SCENARIO_HELP: Mapping[str, str] = {
    "num_items": "Catalogue size (ScenarioParams).",
    "slate_size": "Slate size (ScenarioParams).",
    "max_session_length": "Session cap (ScenarioParams; the rule's if unset).",
    "data_dir": "Data directory of data-driven scenarios.",
}


def _field(name: str) -> dataclasses.Field:
  fields = {f.name: f for f in dataclasses.fields(run_config.RunConfig)}
  return fields[name]


def define(names: Sequence[str], help_texts: Mapping[str, str] | None = None,
           **defaults: Any) -> None:
  """Defines a flag for each RunConfig field in `names`, with the field's
  default unless `defaults` gives the binary's own, and `HELP` unless
  `help_texts` says what the flag means to this binary."""
  for name in names:
    field = _field(name)
    default = defaults.get(name, field.default)
    help_text = (help_texts or {}).get(name, HELP[name])
    kind = str(field.type)
    if name == "planner_mode":
      flags.DEFINE_enum(name, default, run_config.PLANNER_MODES, help_text)
    elif kind == "bool":
      flags.DEFINE_bool(name, default, help_text)
    elif kind.startswith("int"):
      flags.DEFINE_integer(name, default, help_text)
    elif kind.startswith("str"):
      flags.DEFINE_string(name, default, help_text)
    else:
      raise TypeError(f"RunConfig.{name} ({kind}) has no flag type")


def define_scenario_flags() -> None:
  """--num_items, --slate_size, --max_session_length and --data_dir."""
  for name, help_text in SCENARIO_HELP.items():
    if name == "data_dir":
      flags.DEFINE_string(name, None, help_text)
    else:
      flags.DEFINE_integer(name, None, help_text)


def values(names: Sequence[str]) -> dict[str, Any]:
  """The parsed values of the flags `names`, by name."""
  return {name: getattr(flags.FLAGS, name) for name in names}


def scenario_values() -> dict[str, Any]:
  """The parsed scenario flags, by name (None: unset)."""
  return values(tuple(SCENARIO_HELP))
