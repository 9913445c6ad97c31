"""What every training run shares, whatever its agent family."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from lerl_recsim import environment, planner_environment
from lerl_recsim.scenarios import registry

DEFAULT_PLANNER = "embedded"
# How training waits for the planner: "background" never waits (users in
# situations the LLM has not answered yet get the heuristic plan meanwhile);
# "wait" asks and waits, so a run repeats exactly. Evaluation plans in the
# same mode, so that a policy is evaluated under the masks it trained under.
PLANNER_MODES = ("background", "wait")

# Training iterations by agent family under the scenario's default exit rule
# (`satisfaction`): the smallest candidate budget at which the plateau rule
# (learning_curves.PlateauRule) holds for the family's agents on the
# seed-mean curves of development seeds 100-104, 64 users (the DQN family's
# at the learner of commit 6995fda; docs/results/development.md), else the
# largest candidate (the PPO family's: at 4,000 flat `ppo` still rises; at
# 2,000 the rule fails under `temper` for both agents and under
# `category_window:dorl` for lerl_ppo+embedded, so 4,000 under every rule): the
# budget a run gets unless told otherwise. A DQN or bandit iteration collects 4
# steps of every user, a PPO iteration 16; scripted agents do not train.
CONVERGENCE_BUDGETS = {"dqn": 30_000, "ppo": 4_000, "bandit": 3_000,
                       "scripted": 1}
# The family's budget under another exit rule (`name` or `name:preset`),
# chosen the same way (docs/results/development.md).
EXIT_RULE_BUDGETS: Mapping[tuple[str, str], int] = {
    ("dqn", "temper"): 20_000, ("dqn", "category_window:dorl"): 40_000}


def convergence_budget(family: str, exit_rule: str | None) -> int:
  """Training iterations for an agent family under an exit rule (`name` or
  `name:preset`; None: the scenario's default rule)."""
  return EXIT_RULE_BUDGETS.get((family, exit_rule),
                               CONVERGENCE_BUDGETS[family])


def budgets_text() -> str:
  """The convergence budgets in words, for --help and results headers."""
  text = ", ".join(f"{family} {budget:,}" for family, budget in
                   CONVERGENCE_BUDGETS.items() if family != "scripted")
  return text + "".join(f"; {family} {budget:,} under {rule}" for
                        (family, rule), budget in EXIT_RULE_BUDGETS.items())
# Evaluations (and checkpoints) per run when their interval is not given:
# the points of the learning curve.
CURVE_POINTS = 10


@dataclasses.dataclass(frozen=True)
class AgentSpec:
  """How an agent name maps to a learning family and a planner.

  Attributes:
    family: "dqn", "ppo", "bandit" or "scripted".
    planner: None (no planner), "flag" (the --planner backend) or a fixed
      backend string.
    doc: one line for --help and errors.
  """

  family: str
  planner: str | None
  doc: str


AGENTS: Mapping[str, AgentSpec] = {
    "lerl": AgentSpec("dqn", "flag", "LLM planner + masked double DQN"),
    "lerl_ppo": AgentSpec("ppo", "flag", "LLM planner + masked PPO"),
    "dqn": AgentSpec("dqn", None, "flat double DQN, no planner"),
    "ppo": AgentSpec("ppo", None, "flat PPO, no planner"),
    "heuristic_dqn": AgentSpec("dqn", "heuristic",
                               "non-LLM heuristic planner + masked double DQN"),
    "myopic": AgentSpec("bandit", None,
                        "neural epsilon-greedy one-step reward model"),
    "random": AgentSpec("scripted", None, "uniformly random allowed items"),
    "diversifying": AgentSpec("scripted", None,
                              "engaging categories not shown recently"),
    "oracle": AgentSpec("scripted", None,
                        "reads the hidden user state; not deployable"),
    "planning_oracle": AgentSpec(
        "scripted", None, "searches ahead in the true simulator from the "
        "hidden state; not deployable"),
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The run-level settings shared by all agent families.

  Attributes:
    agent: a name in AGENTS.
    scenario: a registered scenario name.
    scenario_overrides: passed to `make_env` (exit_rule, num_items, ...).
    planner: backend string when the agent plans with the --planner flag.
    replan_every: K, steps between a user's plans.
    num_users: simultaneous training users.
    num_iterations: training iterations (one collect + train round each);
      None: the family's convergence budget under the run's exit rule
      (`convergence_budget`).
    num_eval_sessions: fresh users in each evaluation, one session each.
    eval_interval: iterations between evaluations (the last always runs);
      None: num_iterations / CURVE_POINTS.
    checkpoint_interval: iterations between checkpoints; None: as
      eval_interval.
    log_interval: iterations between progress lines; None: as
      eval_interval.
    seed: seeds environments, networks and exploration.
    planner_cache: optional SQLite file for the LLM planner's answers, so
      later runs (and resumed ones) reuse them instead of asking again.
    planner_mode: one of PLANNER_MODES, for training.
    stop_when_levelled: end training at the first evaluation at which the
      learning curve has levelled off (`learning_curves.PlateauRule`), or
      after num_iterations, whichever comes first.
    intra_op_threads: threads TensorFlow gives one op; 0: TensorFlow's
      choice (TF_NUM_INTRAOP_THREADS, else one per core). Training's ops
      are small (64 users, batches of 256), and with one thread each the
      collection and the gradient step run side by side on their own
      threads: on 2 cores `dqn` trained 1.28-1.33x faster than with
      TensorFlow's choice (docs/results/development.md). It changes
      floating-point sums, so it is part of a run's identity.
    gin_bindings: the gin bindings in effect (`gin_config.parse`), recorded
      in config.json beside the run's settings when there are any, so that
      a run directory without them reads as before.
  """

  agent: str
  scenario: str = "interest_evolution"
  scenario_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  planner: str = DEFAULT_PLANNER
  replan_every: int = planner_environment.DEFAULT_REPLAN_EVERY
  num_users: int = environment.DEFAULT_NUM_USERS
  num_iterations: int | None = None
  num_eval_sessions: int = 500
  eval_interval: int | None = None
  checkpoint_interval: int | None = None
  log_interval: int | None = None
  seed: int = 0
  planner_cache: str | None = None
  planner_mode: str = "background"
  stop_when_levelled: bool = False
  intra_op_threads: int = 1
  gin_bindings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    if self.agent not in AGENTS:
      raise ValueError(f"unknown agent {self.agent!r}; accepted: {sorted(AGENTS)}")
    if self.scenario not in registry.SCENARIOS:
      raise ValueError(f"unknown scenario {self.scenario!r}; accepted: "
                       f"{sorted(registry.SCENARIOS)}")
    planner_environment.check_replan_every(self.replan_every)
    # Resolved here, so that config.json records the values a run used.
    if self.num_iterations is None:
      object.__setattr__(self, "num_iterations", convergence_budget(
          self.spec.family, self.exit_rule_label))
    if isinstance(self.num_iterations, int) and self.num_iterations >= 1:
      interval = max(self.num_iterations // CURVE_POINTS, 1)
      for name in ("eval_interval", "checkpoint_interval", "log_interval"):
        if getattr(self, name) is None:
          object.__setattr__(self, name, interval)
    if self.planner_mode not in PLANNER_MODES:
      raise ValueError(f"unknown planner_mode {self.planner_mode!r}; "
                       f"accepted: {list(PLANNER_MODES)}")
    for name, least in (("num_users", 1), ("num_iterations", 1),
                        ("num_eval_sessions", 1), ("eval_interval", 1),
                        ("checkpoint_interval", 1), ("log_interval", 1),
                        ("intra_op_threads", 0)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")

  @property
  def spec(self) -> AgentSpec:
    return AGENTS[self.agent]

  @property
  def exit_rule_label(self) -> str | None:
    """The exit rule the overrides name, as `name` or `name:preset`; None
    when they name none (the scenario's default)."""
    name = self.scenario_overrides.get("exit_rule")
    preset = (self.scenario_overrides.get("exit_params") or {}).get("preset")
    return name if name is None or preset is None else f"{name}:{preset}"

  @property
  def planner_backend(self) -> str | None:
    """The backend this run plans with, or None."""
    planner = self.spec.planner
    return self.planner if planner == "flag" else planner

  def to_dict(self) -> dict[str, Any]:
    values = dataclasses.asdict(self)
    values["scenario_overrides"] = dict(self.scenario_overrides)
    del values["gin_bindings"]
    values["planner"] = self.planner_backend
    if values["planner"] is None:
      values["replan_every"] = None
      values["planner_mode"] = None
    return values
