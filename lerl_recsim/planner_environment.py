"""The planner applied: a wrapper that turns each user's plan into the mask.

Holds every slot's current plan, asks the planner for new ones when they are
due (at session start and every `replan_every` steps; all due users in one
`plan()` call), and writes the items of the planned categories, AND the
wrapped environment's own mask, into `observation['mask']`. When a session
ends, the planner reflects on that session, read from the LAST observation
before the slot is refilled.

With `wait_for_planner=False` the planner answers what it can at once and
asks about new situations in the background (see `Planner.plan`): training
never waits for the LLM, at the price of runs that no longer repeat exactly
(which users get the LLM's plan depends on timing).

Widening rule: a plan whose categories leave fewer allowed items than the
slate needs gets more categories, one at a time in the heuristic planner's
order for that user, until the slate fits; each widened plan is counted.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from tf_agents.environments import wrappers
from tf_agents.trajectories import time_step as ts
from tf_agents.typing import types

from lerl_recsim import environment as environment_lib
from lerl_recsim.planner import (HeuristicPlanner, PromptConfig, StepRecord,
                                 UserHistory, make_planner)
from lerl_recsim.scenarios.catalogue import Catalogue

# Replan every step (LERL's cadence): holding a plan for even 2 steps costs
# a greedy low-level policy a quarter of its reward, K = 10 up to 83%
# (bench/plan_handicap.py, docs/results/development.md). The LLM's cost stays
# bounded because its answers are kept per situation (docs/planner.md).
DEFAULT_REPLAN_EVERY = 1

# Prompts for this project's scenarios, whose engagement lies in [0, 1]:
# the last step (its category, click and engagement level: none, low,
# high) and the categories shown at each of the last 3 steps (saturated);
# any category of the catalogue may be chosen. This is what keeps the LLM
# within 50 calls per 1,000 user-steps at K = 1 from a cold cache (8-24 on
# development seed 100). Every view of the last 4 steps measured (what the
# DORL category window looks back over) made 79-935 situations per 1,000
# user-steps, and a shortlist of the heuristic's picks 310-910, so they are
# options (`history_window`, `shortlist_size`), not the default; session
# length and reward multiplied situations about sevenfold (docs/planner.md,
# "Situations").
SCENARIO_PROMPT_CONFIG = PromptConfig(
    history_window=1, engagement_edges=(0.01, 0.6),
    engagement_labels=("none", "low", "high"), length_step=10,
    reward_step=5.0, show_totals=False, shortlist_size=None,
    candidate_edges=(0.01, 0.6),
    candidate_labels=("not shown yet", "engagement none", "engagement low",
                      "engagement high"))

# A model computed in this process by llama.cpp (embedded, gguf:PATH) is not
# asked to write its plan but scores every category (answer="likelihood"),
# and each user's plan is the best-scored 9 of the heuristic's first 12
# picks for that user. Written plans of the embedded 135M model broke the
# plan rules about half the time (repeated names); with likelihoods, M = 10
# to 14 kept the scripted policies' losses within 5% on development seed
# 100, where the model choosing alone (M = 20) lost up to 13%
# (docs/planner.md, "How the model answers").
# Other backends write their plan: an OpenAI-style API neither continues an
# assistant message nor, in general, reports log-probabilities.
LOCAL_MODEL_PROMPT_CONFIG = dataclasses.replace(
    SCENARIO_PROMPT_CONFIG, answer="likelihood", score_shortlist=12)


# Lessons about sessions 16, 36, 61, 93, ... (gaps growing by 1.25): about
# 30 lessons in a million user-steps instead of one per session.
EFFICIENT_REFLECTIONS = {"reflect_every": 16, "reflect_growth": 1.25}

# CPU threads of a local model asked in the background: it shares the cores
# with training, which keeps them busy. On 2 cores, in 6,000 iterations from
# a cold cache, a one-thread model answered as many situations as a
# two-thread one (443 against 442 calls, 92.7% against 92.5% of the plans)
# while training ran 1.27x faster (docs/results/development.md).
BACKGROUND_MODEL_THREADS = 1


def local_backend(backend: str) -> bool:
  """Whether `backend`'s model computes in this process (llama.cpp)."""
  return backend == "embedded" or backend.startswith("gguf:")


def default_planner_options(backend: str) -> dict[str, Any]:
  """The `Planner` options `make_planned_env` gives an LLM backend.

  A model computed in this process scores categories
  (LOCAL_MODEL_PROMPT_CONFIG) and writes no lessons (`reflections=None`):
  the embedded 135M model's lessons are not about the sessions ("the user
  left after completing 20-29 steps of the gamification system"), plans
  with and without them scored alike (within 4.7 points on the plan-quality
  bench), and each early lesson changes every prompt, so the LLM's answered
  situations had to be asked again: with lessons, its share of training
  plans was 0-44% over the first 2,400 iterations of development seed 100,
  without them 95% from iteration 800 on (docs/planner.md, "Lessons").
  Other backends write their plan and learn lessons (EFFICIENT_REFLECTIONS).
  """
  if local_backend(backend):
    return {"prompt_config": LOCAL_MODEL_PROMPT_CONFIG, "reflections": None}
  return {"prompt_config": SCENARIO_PROMPT_CONFIG, **EFFICIENT_REFLECTIONS}


def default_prompt_config(backend: str) -> PromptConfig:
  """The prompt and answer `make_planned_env` gives an LLM backend."""
  return default_planner_options(backend)["prompt_config"]


class PlannerLike(Protocol):
  """What the wrapper needs of a planner (Planner, HeuristicPlanner)."""

  def plan(self, histories: Sequence[UserHistory],
           wait: bool = True) -> list[tuple[int, ...]]:
    """`wait` is passed (as False) only with wait_for_planner=False."""
    ...

  def end_sessions(self, histories: Sequence[UserHistory],
                   wait: bool = True) -> None:
    """Called only when `writes_lessons` (if the planner has it) is true."""
    ...

  def metrics(self) -> dict[str, float]:
    ...


def combined_metrics(planner_metrics: Mapping[str, float],
                     counts: Mapping[str, float],
                     planner_seconds: float) -> dict[str, float]:
  """A planned environment's metrics: its planner's (`planner_metrics`),
  the environment's `counts` (user_steps, planned_users, ended_sessions
  among them; they replace the planner's counts of the same name), the
  planner's wall time, the share of planned users whose plan is the LLM's,
  and per-1,000-user-step rates of LLM calls and planned users."""
  out = {key: 0.0 for key in ("llm_calls", "cache_hits", "fallbacks",
                              "llm_plans", "provisional_plans")}
  out.update(planner_metrics)
  out.update(counts)
  out["planner_seconds"] = planner_seconds
  out["llm_plan_share"] = out["llm_plans"] / max(out["planned_users"], 1.0)
  per_1k = 1000.0 / max(out["user_steps"], 1.0)
  out["llm_calls_per_1k_user_steps"] = out["llm_calls"] * per_1k
  out["planned_users_per_1k_user_steps"] = out["planned_users"] * per_1k
  return out


def check_replan_every(replan_every: Any) -> int:
  if (isinstance(replan_every, bool)
      or not isinstance(replan_every, (int, np.integer)) or replan_every < 1):
    raise ValueError(
        f"replan_every must be an int >= 1 (1 replans at every step, as "
        f"LERL), got {replan_every!r}")
  return int(replan_every)


def observation_history(observation: Mapping[str, np.ndarray], slot: int,
                        item_categories: Sequence[tuple[int, ...]]
                        ) -> UserHistory:
  """Row `slot` of a batched observation as the planner sees it.

  Categories instead of items; `item_categories[i]` holds item i's category
  ids. Shared with serving, which rebuilds the same observation.
  """
  items = observation["item_history"][slot].tolist()
  engagement = observation["response_history"][slot].sum(axis=1).tolist()
  clicked = (observation["click_history"][slot].sum(axis=1) > 0).tolist()
  steps = [
      StepRecord(sum((item_categories[i] for i in row), ()), engagement[t],
                 clicked[t])
      for t, row in enumerate(items) if row[0] >= 0]
  length = int(observation["session_length"][slot])
  return UserHistory(tuple(steps), length,
                     float(observation["mean_engagement"][slot]) * length)


def plan_items(plan: Sequence[int], category_items: np.ndarray,
               user: str) -> np.ndarray:
  """bool [N]: the items of the plan's categories (category_items [C, N])."""
  num_categories = category_items.shape[0]
  bad = [c for c in plan if not 0 <= c < num_categories]
  if bad:
    raise ValueError(
        f"the planner returned category ids {bad} for {user}; "
        f"expected ids in [0, {num_categories - 1}]")
  return category_items[list(plan)].any(axis=0)


def widen_plan(plan: Sequence[int], ranking: Sequence[int],
               category_items: np.ndarray, allowed: np.ndarray,
               slate_size: int, user: str) -> tuple[int, ...]:
  """`plan` plus categories in `ranking` order until a slate fits `allowed`.

  RuntimeError when even every category leaves fewer than `slate_size`
  allowed items.
  """
  widened = list(plan)
  for category in ranking:
    if category in widened:
      continue
    widened.append(category)
    items = plan_items(widened, category_items, user) & allowed
    if items.sum() >= slate_size:
      return tuple(widened)
  raise RuntimeError(
      f"the wrapped environment allows only {int(allowed.sum())} items "
      f"to {user}; a slate needs {slate_size}")


class PlanMasks:
  """Each user's plan and the item mask it leaves: the one place where plans
  become masks, for the planned environment and for serving.

  A plan that leaves fewer than a slate of items under the wrapped mask is
  widened with categories in the heuristic's ranking order.

  Args:
    category_items: bool [C, N], the items of each category.
    slate_size: Items per slate.
    widener: Ranks categories for widening (seeded).
    num_users: Users (rows).
    unit: How errors name a row ("slot", "user").
  """

  def __init__(self, category_items: np.ndarray, slate_size: int,
               widener: HeuristicPlanner, num_users: int,
               unit: str = "slot") -> None:
    self._category_items = category_items
    self._item_categories = [tuple(np.flatnonzero(column).tolist())
                             for column in category_items.T]
    self._slate_size = slate_size
    self._widener = widener
    self._unit = unit
    self.plans: list[tuple[int, ...]] = [()] * num_users
    self._plan_items = np.zeros((num_users, category_items.shape[1]), bool)

  def fresh(self, num_users: int) -> PlanMasks:
    """Empty plans for `num_users` rows, sharing this one's catalogue (so
    that a caller planning new batches derives it once)."""
    other = copy.copy(self)
    other.plans = [()] * num_users
    other._plan_items = np.zeros((num_users, self._category_items.shape[1]),
                                 bool)
    return other

  def history(self, observation: Mapping[str, np.ndarray],
              row: int) -> UserHistory:
    """Row `row`'s session as the planner sees it (categories, not items)."""
    return observation_history(observation, row, self._item_categories)

  def set(self, rows: Sequence[int], plans: Sequence[Sequence[int]]) -> None:
    """New plans for `rows` (ValueError for a category id out of range)."""
    if len(plans) != len(rows):
      raise RuntimeError(
          f"the planner returned {len(plans)} plans for {len(rows)} users")
    for row, plan in zip(rows, plans):
      self._set(int(row), tuple(int(c) for c in plan))

  def _set(self, row: int, plan: tuple[int, ...]) -> None:
    self._plan_items[row] = plan_items(plan, self._category_items,
                                       f"{self._unit} {row}")
    self.plans[row] = plan

  def masks(self, observation: Mapping[str, np.ndarray],
            allowed: np.ndarray) -> tuple[np.ndarray, int]:
    """(bool [U, N] masks, rows widened): each plan's items under `allowed`,
    the wrapped mask; short rows are widened (their plans too)."""
    mask = self._plan_items & allowed
    short = np.flatnonzero(mask.sum(axis=1) < self._slate_size)
    for row in short:
      who = f"{self._unit} {row}"
      self._set(row, widen_plan(
          self.plans[row], self._widener.ranking(self.history(observation,
                                                              row)),
          self._category_items, allowed[row], self._slate_size, who))
      mask[row] = self._plan_items[row] & allowed[row]
    return mask, short.size


class PlannedEnvironment(wrappers.PyEnvironmentBaseWrapper):
  """A batched scenario environment whose mask follows the planner's plans.

  Specs, batching and per-slot episodes are those of the wrapped
  environment; only `observation['mask']` changes. Actions must lie inside
  the wrapper's mask (checked here, never clipped).

  Args:
    env: The scenario environment (`lerl_recsim.make_env`).
    planner: Any object with `plan`, `end_sessions` and `metrics`.
    replan_every: K; a user's plan is renewed every K steps of its session
      and when its session starts.
    seed: Seeds the heuristic ranking used to widen plans.
    wait_for_planner: False plans in the background (`Planner.plan`).
  """

  def __init__(self, env: environment_lib.RecSimEnvironment,
               planner: PlannerLike, replan_every: int = DEFAULT_REPLAN_EVERY,
               seed: int = 0, wait_for_planner: bool = True) -> None:
    super().__init__(env)
    # Planners written for waiting only need not know the argument.
    self._wait_args = () if wait_for_planner else (False,)
    self._replan_every = check_replan_every(replan_every)
    self._planner = planner
    scenario = env.scenario
    self._slate_size = scenario.slate_size
    self._num_items = scenario.items.num_items
    self._plan_masks = PlanMasks(
        np.asarray(scenario.items.categories).T > 0, scenario.slate_size,
        HeuristicPlanner(scenario.catalogue, seed=seed), env.batch_size)
    users = env.batch_size
    self._since_plan = np.zeros(users, np.int64)
    self._mask = np.zeros((users, self._num_items), bool)
    self._last = np.zeros(users, bool)
    self._counts: collections.Counter[str] = collections.Counter()
    self._planner_seconds = 0.0

  # --- what callers may read ----------------------------------------------

  @property
  def planner(self) -> PlannerLike:
    return self._planner

  @property
  def replan_every(self) -> int:
    return self._replan_every

  @property
  def plans(self) -> tuple[tuple[int, ...], ...]:
    """Each slot's current plan (category ids), after any widening."""
    return tuple(self._plan_masks.plans)

  def planner_metrics(self) -> dict[str, float]:
    """The planner's own metrics plus the wrapper's counts.

    `user_steps`: steps whose action was used; `planner_seconds`: wall time
    inside the planner (plans and reflections); `widenings`: plans that
    needed more categories (`plans` shows them widened); per-1,000-user-step
    rates of LLM calls and planned users.
    """
    return combined_metrics(
        self._planner.metrics(),
        {key: float(self._counts[key]) for key in
         ("user_steps", "planned_users", "plan_batches", "widenings",
          "ended_sessions")}, self._planner_seconds)

  # --- observation -> history ---------------------------------------------

  def history(self, observation: Mapping[str, np.ndarray],
              slot: int) -> UserHistory:
    """The slot's session as the planner sees it (categories, not items)."""
    return self._plan_masks.history(observation, slot)

  # --- planning -------------------------------------------------------------

  def _timed(self, fn: Any, *args: Any) -> Any:
    start = time.perf_counter()
    try:
      return fn(*args)
    finally:
      self._planner_seconds += time.perf_counter() - start

  def _update(self, observation: Mapping[str, np.ndarray],
              base_mask: np.ndarray, due: np.ndarray) -> None:
    """Plans the due slots in one batch, then rebuilds every mask row.

    A row whose plan no longer leaves room for a slate under the wrapped
    environment's mask is widened too.
    """
    slots = np.flatnonzero(due)
    if slots.size:
      histories = [self.history(observation, s) for s in slots]
      plans = self._timed(self._planner.plan, histories, *self._wait_args)
      self._plan_masks.set(slots, plans)
      self._counts["plan_batches"] += 1
      self._counts["planned_users"] += len(slots)
      self._since_plan[slots] = 0
    self._mask, widened = self._plan_masks.masks(observation, base_mask)
    self._counts["widenings"] += widened

  def _with_mask(self, time_step: ts.TimeStep) -> ts.TimeStep:
    mask = self._mask.copy()
    mask.setflags(write=False)
    observation = dict(time_step.observation, mask=mask)
    return time_step._replace(observation=observation)

  # --- PyEnvironment -----------------------------------------------------

  def _reset(self) -> ts.TimeStep:
    time_step = self._env.reset()
    self._last[:] = False
    self._update(time_step.observation["observation"],
                 time_step.observation["mask"],
                 np.ones(self.batch_size, bool))
    return self._with_mask(time_step)

  def _step(self, action: types.NestedArray) -> ts.TimeStep:
    environment_lib.check_actions(action, self._mask, ~self._last,
                                  self._num_items, self._slate_size)
    time_step = self._env.step(action)
    observation = time_step.observation["observation"]
    step_type = np.asarray(time_step.step_type)
    first = step_type == ts.StepType.FIRST
    self._counts["user_steps"] += int((~first).sum())
    self._last = step_type == ts.StepType.LAST
    ended = np.flatnonzero(self._last)
    if ended.size:
      self._counts["ended_sessions"] += ended.size
    if ended.size and getattr(self._planner, "writes_lessons", True):
      # The LAST observation still holds the departed session.
      self._timed(self._planner.end_sessions,
                  [self.history(observation, s) for s in ended],
                  *self._wait_args)
    self._since_plan[~first] += 1
    due = first | ((self._since_plan >= self._replan_every) & ~self._last)
    self._update(observation, time_step.observation["mask"], due)
    return self._with_mask(time_step)


def make_planned_env(scenario: str | environment_lib.RecSimEnvironment = (
                         "interest_evolution"),
                     planner: str | PlannerLike = "embedded",
                     replan_every: int = DEFAULT_REPLAN_EVERY,
                     num_users: int | None = None, seed: int = 0, *,
                     wait_for_planner: bool = True,
                     model_options: Mapping[str, Any] | None = None,
                     planner_options: Mapping[str, Any] | None = None,
                     **overrides: Any) -> PlannedEnvironment:
  """A scenario environment whose mask follows a planner.

  Training, evaluation and `lerl-eval` all build their planned environments
  here (or with `tf_environment.make_planned_tf_env`, its twin).

  Args:
    scenario: A registered scenario name, built with `num_users`, `seed`
      and `**overrides` as by `lerl_recsim.make_env`; or a scenario
      environment to wrap as it is (then give neither `num_users` nor
      overrides).
    planner: A backend string for `lerl_recsim.planner.make_planner`
      (`embedded`, `gguf:PATH`, `openai:MODEL`, `ollama:MODEL`, `heuristic`,
      `fake`) or a ready planner object.
    replan_every: K, steps between a user's plans (1 is LERL).
    seed: Seeds the environment and planner built here, and the heuristic
      ranking that widens plans too small for a slate.
    wait_for_planner: False asks the LLM in the background, and users in
      situations it has not answered yet get the heuristic plan meanwhile.
    model_options: For the backend's chat model (e.g. `base_url`).
    planner_options: For `Planner`; LLM backends default to
      `default_prompt_config(backend)` and EFFICIENT_REFLECTIONS.
  """
  check_replan_every(replan_every)
  env = scenario_environment(scenario, environment_lib.make_env, num_users,
                             seed, overrides)
  planner = build_planner(planner, env.scenario.catalogue, seed,
                          model_options, planner_options,
                          background=not wait_for_planner)
  return PlannedEnvironment(env, planner, replan_every, seed=seed,
                            wait_for_planner=wait_for_planner)


def scenario_environment(scenario: Any, make: Callable[..., Any],
                         num_users: int | None, seed: int,
                         overrides: Mapping[str, Any]) -> Any:
  """`make(scenario, ...)` for a scenario name; a ready environment as is."""
  if not isinstance(scenario, str):
    if num_users is not None or overrides:
      raise ValueError(
          f"num_users and scenario overrides apply only when scenario is a "
          f"name; got the environment {type(scenario).__name__} with "
          f"num_users={num_users!r} and overrides {sorted(overrides)}")
    return scenario
  sized = {} if num_users is None else {"num_users": num_users}
  return make(scenario, seed=seed, **sized, **overrides)


def build_planner(planner: str | PlannerLike, catalogue: Catalogue, seed: int,
                  model_options: Mapping[str, Any] | None = None,
                  planner_options: Mapping[str, Any] | None = None, *,
                  background: bool = False) -> PlannerLike:
  """A backend string's planner with this module's defaults for LLMs
  (`default_planner_options`, and BACKGROUND_MODEL_THREADS for a local
  model asked in the `background`); a ready planner as is."""
  if isinstance(planner, str):
    options = dict(planner_options or {})
    if planner != "heuristic":
      options = {**default_planner_options(planner), **options}
      if background and local_backend(planner):
        model_options = {"n_threads": BACKGROUND_MODEL_THREADS,
                         **(model_options or {})}
    return make_planner(planner, catalogue, model_options=model_options,
                        seed=seed, **options)
  if model_options or planner_options:
    raise ValueError(
        "model_options and planner_options apply only when planner is a "
        f"backend string, got the object {type(planner).__name__}")
  return planner
