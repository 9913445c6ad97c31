"""TensorFlow-native environments: the training fast path.

`TFRecSimEnvironment` is a TF-Agents `TFEnvironment` over the same
`CompiledSimulator` as the Python `RecSimEnvironment` (same dynamics, same
stateless seeding: a seed and actions give the same trajectories), with its
time step in variables, so that a driver can run policy, environment step
and replay write for many steps as one graph call. `PlannedTFEnvironment`
adds the planner inside the graph: each slot's plan lives in a variable, the
heuristic plans the whole batch at once, and the LLM's plans are served from
a hash table keyed by situation (`planner.situations`); new situations are
reported back to Python after the graph call, asked of the LLM (waiting or in
the background), and their answers enter the table for later steps.

The Python environments stay the public, validated contract; these serve
training. After each graph call the collector hands the stacked per-step
`step_report()`s to `absorb_reports`, where the metrics of ended sessions
are recorded and the planner hears about them.
"""

from __future__ import annotations

import collections
import heapq
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tf_agents.environments import tf_environment
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from lerl_recsim import environment as environment_lib
from lerl_recsim import metrics as metrics_lib
from lerl_recsim import planner_environment, simulator
from lerl_recsim.planner import (FALLBACK_CAUSES, Fallback, HeuristicPlanner,
                                 Planner)
from lerl_recsim.planner.heuristic import observation_steps
from lerl_recsim.planner.history import history_from_json, history_to_json
from lerl_recsim.planner.likelihood import CategoryScores, preference_row
from lerl_recsim.planner.situations import keys_of, situation_view
from lerl_recsim.scenarios import interest_evolution

Report = Mapping[str, Any]
# What the planned environment counts in the graph: besides plans served
# from the table, users whose situation the table marks as failing (backing
# off after a failed request), by cause.
COUNTERS = (("user_steps", "planned_users", "widenings", "ended_sessions",
             "table_plans")
            + tuple(f"table_fallback_{c}" for c in FALLBACK_CAUSES))
# A table row whose first entry is FAILING - i marks a situation failing with
# cause FALLBACK_CAUSES[i]; -1 (the default) is a missing one.
FAILING = -2
# In the background, a local model answers without rest while the table
# misses more than 1 - this share of a graph call's plans, and rests (its
# `Planner.local_busy_share`) once the LLM's plans are at least this share:
# the LLM should make the plans early in training (issue target: >= 90%
# after the first 10%), and cost training time little after.
LLM_SHARE_TO_REST = 0.9


def compile_xla(function: Any) -> Any:
  """`function` as one XLA-compiled graph function."""
  return tf.function(function, jit_compile=True, autograph=False)


def reset_and_absorb(env: TFRecSimEnvironment | PlannedTFEnvironment) -> None:
  """Resets `env` (new users everywhere) and absorbs the reset's report, as
  a stack of one step."""
  env.reset()
  env.absorb_reports(tf.nest.map_structure(lambda x: x.numpy()[None],
                                           env.step_report()))


class TFRecSimEnvironment(environment_lib.ScenarioProperties,
                          tf_environment.TFEnvironment):
  """Batched per-user-episode scenario environment, stepped in the graph.

  Same specs, per-slot episodes and seeding as `RecSimEnvironment`; the
  mask is all True. Ended sessions' metrics are recorded by
  `absorb_reports`.
  """

  def __init__(self, scenario: interest_evolution.Scenario, seed: int):
    observation_spec, action_spec, reward_spec = (
        environment_lib.environment_specs(scenario))
    super().__init__(
        ts.time_step_spec(tensor_spec.from_spec(observation_spec),
                          tensor_spec.from_spec(reward_spec)),
        tensor_spec.from_spec(action_spec), batch_size=scenario.num_users)
    self._scenario = scenario
    self._seed = int(seed)
    self._num_items = scenario.items.num_items
    self._simulator = simulator.CompiledSimulator(scenario)
    self._simulator.build(tf.constant([self._seed, 1], tf.int64))
    users = scenario.num_users
    self._steps_taken = tf.Variable(1, dtype=tf.int64, name="steps_taken")
    self._step_type = tf.Variable(tf.fill([users], ts.StepType.FIRST),
                                  name="step_type")
    self._reward = tf.Variable(tf.zeros([users]), name="reward")
    self._discount = tf.Variable(tf.ones([users]), name="discount")
    self._started = tf.Variable(False, name="started")
    self._mask = tf.ones([users, self._num_items], tf.bool)
    self._metrics = metrics_lib.EpisodeMetricsRecorder()

  @property
  def started(self) -> bool:
    """Whether the environment has been reset (or restored after one):
    a collector then continues instead of resetting."""
    return bool(self._started.numpy())

  def checkpoint_state(self) -> dict[str, Any]:
    """Every variable of the environment's state, for a checkpoint."""
    return {"simulator": self._simulator.checkpoint_state(),
            "steps_taken": self._steps_taken, "step_type": self._step_type,
            "reward": self._reward, "discount": self._discount,
            "started": self._started}

  @property
  def steps_per_call(self) -> int | None:
    """At most this many steps per graph call (None: no limit)."""
    return None

  def _current_time_step(self) -> ts.TimeStep:
    return ts.TimeStep(
        step_type=self._step_type.read_value(),
        reward=self._reward.read_value(),
        discount=self._discount.read_value(),
        observation={"observation": self._simulator.observed(),
                     "mask": self._mask})

  def _reset(self) -> ts.TimeStep:
    self._started.assign(True)
    self._steps_taken.assign(1)
    self._simulator.reset(tf.stack([tf.constant(self._seed, tf.int64),
                                    self._steps_taken]))
    self._step_type.assign(tf.fill(tf.shape(self._step_type),
                                   ts.StepType.FIRST))
    self._reward.assign(tf.zeros_like(self._reward))
    self._discount.assign(tf.ones_like(self._discount))
    return self._current_time_step()

  def check_actions(self, slates: tf.Tensor, mask: tf.Tensor) -> tf.Operation:
    """An assertion that every used slate item lies in range and in `mask`."""
    in_range = (slates >= 0) & (slates < self._num_items)
    allowed = tf.gather(mask, tf.clip_by_value(slates, 0, self._num_items - 1),
                        batch_dims=1)
    ignored = (self._step_type == ts.StepType.LAST)[:, None]
    return tf.debugging.Assert(
        tf.reduce_all((in_range & allowed) | ignored),
        ["an action lies outside its user's mask or the catalogue; slates:",
         slates], summarize=8)

  def _step(self, action: tf.Tensor) -> ts.TimeStep:
    slates = tf.reshape(tf.cast(action, tf.int32),
                        [self.batch_size, self._scenario.slate_size])
    with tf.control_dependencies([self.check_actions(slates, self._mask)]):
      reset = self._step_type == ts.StepType.LAST
    self._steps_taken.assign_add(1)
    outputs = self._simulator.step(
        slates, reset, tf.stack([tf.constant(self._seed, tf.int64),
                                 self._steps_taken]))
    self._step_type.assign(outputs["step_type"])
    self._reward.assign(outputs["reward"])
    self._discount.assign(outputs["discount"])
    return ts.TimeStep(outputs["step_type"], outputs["reward"],
                       outputs["discount"],
                       {"observation": outputs["observation"],
                        "mask": self._mask})

  def step_report(self) -> dict[str, Any]:
    """What Python needs of the last step (read in the graph after it)."""
    return {"step_type": self._step_type.read_value(),
            "session": self._simulator.session_totals()}

  def absorb_reports(self, reports: Report) -> None:
    """Records the metrics of the sessions that ended in these steps.

    Args:
      reports: `step_report()`s as NumPy arrays stacked on a leading time
        axis [T, ...].
    """
    for t, step_type in enumerate(reports["step_type"]):
      last = step_type == ts.StepType.LAST
      if last.any():
        self._metrics.record(
            metrics_lib.session_metrics(
                {name: values[t][last]
                 for name, values in reports["session"].items()}),
            slots=np.flatnonzero(last))


class PlannedTFEnvironment(tf_environment.TFEnvironment):
  """`TFRecSimEnvironment` whose mask follows the planner, in the graph.

  The semantics of `planner_environment.PlannedEnvironment` (plans at
  session start and every K steps, the mask is the plan's items, plans too
  small for a slate are widened in the heuristic's order), computed for all
  slots at once. With the heuristic planner everything happens in the graph.
  With an LLM planner a due user gets the LLM's plan for its situation when
  the table holds one, else the heuristic plan (provisional), and its
  situation is reported; `absorb_reports` asks the planner about reported
  situations and stores its answers. In the background a situation whose
  request failed is marked in the table, so that its users get the
  heuristic plan as counted fallbacks without asking, until the planner's
  back-off for it ends. With `wait_for_planner=True` the
  environment allows one step per graph call and, after each, replaces the
  provisional plans of that step by the LLM's, so that a run repeats
  exactly and equals the Python planned environment's.

  Args:
    env: the scenario's TF environment.
    planner: a `HeuristicPlanner` or an LLM `Planner`.
    replan_every: K.
    seed: seeds the heuristic ranking used to widen plans.
    wait_for_planner: see above.
  """

  def __init__(self, env: TFRecSimEnvironment,
               planner: HeuristicPlanner | Planner,
               replan_every: int = planner_environment.DEFAULT_REPLAN_EVERY,
               seed: int = 0, wait_for_planner: bool = True) -> None:
    super().__init__(env.time_step_spec(), env.action_spec(), env.batch_size)
    self._env = env
    self._planner = planner
    self._replan_every = planner_environment.check_replan_every(replan_every)
    self._wait = bool(wait_for_planner)
    scenario = env.scenario
    self._slate_size = scenario.slate_size
    self._num_categories = scenario.catalogue.num_categories
    categories = np.asarray(scenario.items.categories) > 0  # [N, C]
    self._item_categories = tf.constant(categories, tf.float32)
    self._item_category_ids = [tuple(np.flatnonzero(row).tolist())
                               for row in categories]
    self._item_category_table = tf.constant(category_table(
        self._item_category_ids, self._num_categories))
    self._llm = planner if isinstance(planner, Planner) else None
    heuristic = planner.fallback if self._llm else planner
    if not isinstance(heuristic, HeuristicPlanner):
      raise TypeError(
          f"the graph planner needs a HeuristicPlanner or a Planner, got "
          f"{type(planner).__name__}; use planner_environment.PlannedEnvironment")
    self._heuristic = heuristic.batch
    self._widener = HeuristicPlanner(scenario.catalogue, seed=seed).batch
    users, c = env.batch_size, self._num_categories
    self._plans = tf.Variable(tf.zeros([users, c], tf.bool), name="plans")
    self._since_plan = tf.Variable(tf.zeros([users], tf.int64),
                                   name="since_plan")
    self._mask = tf.Variable(tf.zeros([users, scenario.items.num_items],
                                      tf.bool), name="mask")
    self._due = tf.Variable(tf.zeros([users], tf.bool), name="due")
    self._missed = tf.Variable(tf.zeros([users], tf.bool), name="missed")
    self._keys = tf.Variable(tf.zeros([users], tf.int64), name="keys")
    self._counters = tf.Variable(tf.zeros([len(COUNTERS)], tf.int64),
                                 name="counters")
    # A step's planning is one XLA call (two with an LLM, either side of
    # the table lookup, which XLA cannot compile), not tens of small ops.
    self._merge = compile_xla(self._merge_plans)
    if self._llm is None:
      self._plan_step = compile_xla(self._heuristic_step)
    else:
      self._situations_step = compile_xla(self._situations)
      self._plan_step = compile_xla(self._table_step)
    self._table = tf.lookup.experimental.MutableHashTable(
        tf.int64, tf.int32, default_value=tf.fill([c], -1))
    self._apply = tf.function(self._apply_plans, autograph=False,
                              input_signature=[
                                  tf.TensorSpec([None, c], tf.bool),
                                  tf.TensorSpec([None], tf.int32)])
    self._pool_size = self._reflection_pool_size()
    # Background: situations asked and not answered yet, not asked again
    # until the worker has given new answers.
    self._unanswered: set[int] = set()
    self._answers_seen = 0
    # Background: how often each situation's users missed the table, one
    # history of it to ask with, and how many requests may be in flight.
    self._misses: collections.Counter[int] = collections.Counter()
    self._examples: dict[int, Any] = {}
    self._max_in_flight = 2 * self._llm.max_concurrency if self._llm else 0
    # Background: situations marked failing in the table, and until when.
    self._failing: dict[int, float] = {}
    # Per stored plan, a history of its situation and the prompt it answered.
    self._stored: dict[int, tuple[Any, Any]] = {}
    # Waiting: LLM answers given after the graph call minus table plans
    # replaced by the heuristic (the graph counted table hits as the LLM's).
    self._llm_plan_adjustment = 0
    self._planner_seconds = 0.0

  # --- what callers may read ----------------------------------------------

  @property
  def planner(self) -> HeuristicPlanner | Planner:
    return self._planner

  @property
  def replan_every(self) -> int:
    return self._replan_every

  @property
  def scenario(self) -> interest_evolution.Scenario:
    return self._env.scenario

  def wrapped_env(self) -> TFRecSimEnvironment:
    return self._env

  @property
  def steps_per_call(self) -> int | None:
    return 1 if self._wait and self._llm else None

  @property
  def started(self) -> bool:
    return self._env.started

  def checkpoint_state(self) -> dict[str, Any]:
    """Every variable of the environment's state and the LLM plans' table,
    for a checkpoint; `saved_state` holds the rest."""
    return {"env": self._env.checkpoint_state(), "plans": self._plans,
            "since_plan": self._since_plan, "mask": self._mask,
            "due": self._due, "missed": self._missed, "keys": self._keys,
            "counters": self._counters, "table": self._table}

  def saved_state(self) -> dict[str, Any]:
    """What `checkpoint_state` cannot hold, as JSON values: the planner's
    state and this environment's Python-side records."""
    if self._llm is None:
      return {}
    return {"planner": self._llm.saved_state(),
            "llm_plan_adjustment": self._llm_plan_adjustment,
            "planner_seconds": self._planner_seconds,
            "stored": [[key, history_to_json(history)]
                       for key, (history, _) in self._stored.items()]}

  def load_saved_state(self, state: Mapping[str, Any]) -> None:
    """Restores `saved_state` (after the checkpoint's variables): the
    stored answers' prompts are taken again under the restored pool."""
    if self._llm is None or not state:
      return
    self._llm.load_saved_state(state["planner"])
    self._llm_plan_adjustment = state["llm_plan_adjustment"]
    self._planner_seconds = state["planner_seconds"]
    keys = [key for key, _ in state["stored"]]
    histories = [history_from_json(h) for _, h in state["stored"]]
    self._stored = dict(zip(keys, zip(histories,
                                      self._llm.prompt_keys(histories))))
    self._pool_size = self._reflection_pool_size()

  def plan_sets(self) -> np.ndarray:
    """bool [U, C]: each slot's current plan (after widening)."""
    return self._plans.numpy()

  def planner_metrics(self) -> dict[str, float]:
    """As `PlannedEnvironment.planner_metrics`: the planner's counters plus
    the environment's (user-steps, planned users, widenings, ...)."""
    counted = dict(zip(COUNTERS, self._counters.numpy().astype(float)))
    planner = self._planner.metrics()
    if self._llm is not None:
      # Users planned from the table never reach the planner: they count as
      # the LLM's plans, or as fallbacks where the table marks their
      # situation failing; the other due users are the planner's fallbacks
      # or provisional, unless a waiting planner replaced them.
      for cause in FALLBACK_CAUSES:
        planner[f"fallback_{cause}"] += counted[f"table_fallback_{cause}"]
      planner["fallbacks"] = sum(planner[f"fallback_{c}"]
                                 for c in FALLBACK_CAUSES)
      planner["llm_plans"] = counted["table_plans"] + self._llm_plan_adjustment
      planner["provisional_plans"] = (counted["planned_users"]
                                      - planner["llm_plans"]
                                      - planner["fallbacks"])
      planner["cache_hits"] += counted["table_plans"]
      planner["situations_in_table"] = float(self._table.size().numpy())
    return planner_environment.combined_metrics(
        planner, {key: counted[key] for key in
                  ("user_steps", "planned_users", "widenings",
                   "ended_sessions")}, self._planner_seconds)

  # --- planning in the graph ----------------------------------------------

  def _steps(self, observation: Mapping[str, tf.Tensor]):
    return observation_steps(observation, self._item_categories)

  def _scores_answer(self) -> bool:
    return (self._llm is not None
            and self._llm.prompt_config.answer == "likelihood")

  def _due_slots(self, step_type: tf.Tensor, since_plan: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
    """(due, steps since each slot's plan after planning, counts): new
    sessions and plans K steps old (unless the session just ended) are
    due."""
    first = step_type == ts.StepType.FIRST
    last = step_type == ts.StepType.LAST
    since = tf.where(first, since_plan, since_plan + 1)
    due = first | ((since >= self._replan_every) & ~last)
    counts = {"user_steps": tf.reduce_sum(tf.cast(~first, tf.int64)),
              "ended_sessions": tf.reduce_sum(tf.cast(last, tf.int64)),
              "planned_users": tf.reduce_sum(tf.cast(due, tf.int64))}
    return due, tf.where(due, tf.zeros_like(since), since), counts

  def _heuristic_step(self, observation: Mapping[str, tf.Tensor],
                      step_type: tf.Tensor, base_mask: tf.Tensor,
                      current: tf.Tensor, since_plan: tf.Tensor
                      ) -> tuple[tf.Tensor, ...]:
    """(plans, mask, steps since plans, counts): the heuristic plans the
    due slots."""
    due, since, counts = self._due_slots(step_type, since_plan)
    steps = self._steps(observation)
    plans, mask, counts["widenings"] = self._merge_plans(
        steps, due, self._heuristic.plan_sets(steps), current, base_mask)
    return plans, mask, since, self._count_vector(counts)

  def _situations(self, observation: Mapping[str, tf.Tensor],
                  step_type: tf.Tensor, since_plan: tf.Tensor
                  ) -> tuple[Any, ...]:
    """(due, steps since plans, heuristic plans, pick places or None,
    situation features, counts): what the table lookup needs."""
    due, since, counts = self._due_slots(step_type, since_plan)
    steps = self._steps(observation)
    pick_places = None
    if self._scores_answer():  # the LLM's scores reorder the heuristic's picks
      plans, pick_places = self._heuristic.plans_and_pick_places(steps)
    else:
      plans = self._heuristic.plan_sets(steps)
    length = observation["session_length"]
    reward = (tf.cast(observation["mean_engagement"], tf.float64)
              * tf.cast(length, tf.float64))
    features = situation_view(steps, length, reward, self._llm.prompt_config,
                              self._llm.rules, self._heuristic, pick_places)
    return due, since, plans, pick_places, features, counts

  def _table_step(self, observation: Mapping[str, tf.Tensor],
                  base_mask: tf.Tensor, current: tf.Tensor, due: tf.Tensor,
                  heuristic_plans: tf.Tensor, pick_places: tf.Tensor | None,
                  found: tf.Tensor, counts: dict[str, tf.Tensor]
                  ) -> tuple[tf.Tensor, ...]:
    """(plans, mask, missed, counts): due slots whose situation the table
    holds get the LLM's plan, the others the heuristic's; missed are the
    due slots whose situation is neither held nor failing."""
    steps = self._steps(observation)
    hit = found[:, 0] >= 0
    failing = found[:, 0] <= FAILING
    llm_plans = (self._plans_from_preferences(steps, found, pick_places)
                 if self._scores_answer() else found > 0)
    plans = tf.where(hit[:, None], llm_plans, heuristic_plans)
    counts = dict(counts,
                  table_plans=tf.reduce_sum(tf.cast(hit & due, tf.int64)))
    for i, cause in enumerate(FALLBACK_CAUSES):
      counts[f"table_fallback_{cause}"] = tf.reduce_sum(tf.cast(
          due & (found[:, 0] == FAILING - i), tf.int64))
    plans, mask, counts["widenings"] = self._merge_plans(
        steps, due, plans, current, base_mask)
    return plans, mask, due & ~hit & ~failing, self._count_vector(counts)

  def _replan(self, time_step: ts.TimeStep) -> ts.TimeStep:
    """Plans the due slots after `time_step`, rebuilds the mask; returns
    the time step with it."""
    observation = time_step.observation["observation"]
    base_mask = time_step.observation["mask"]
    current = self._plans.read_value()
    if self._llm is None:
      plans, mask, since, counts = self._plan_step(
          observation, time_step.step_type, base_mask, current,
          self._since_plan.read_value())
    else:
      due, since, heuristic_plans, pick_places, features, counts = (
          self._situations_step(observation, time_step.step_type,
                                self._since_plan.read_value()))
      keys = keys_of(features)
      found = tf.reshape(self._table.lookup(keys),
                         [self.batch_size, self._num_categories])
      plans, mask, missed, counts = self._plan_step(
          observation, base_mask, current, due, heuristic_plans, pick_places,
          found, counts)
      self._missed.assign(missed)
      self._keys.assign(keys)
      self._due.assign(due)
    self._since_plan.assign(since)
    self._plans.assign(plans)
    self._mask.assign(mask)
    self._counters.assign_add(counts)
    return self._with_mask(time_step, mask)

  def _plans_from_preferences(self, steps, preference: tf.Tensor,
                              pick_places: tf.Tensor) -> tf.Tensor:
    """bool [B, C]: each user's plan from its situation's row of
    `preference_row`s, as `Planner.plans_from_scores` makes it."""
    return self._heuristic.preferred_sets(
        steps, preference, self._llm.prompt_config.score_shortlist,
        self._llm.rules.max_categories, pick_places)

  def _set_plans(self, steps, due: tf.Tensor, plans: tf.Tensor,
                 base_mask: tf.Tensor, counts: dict[str, tf.Tensor]
                 ) -> tf.Tensor:
    """Takes `plans` for the `due` slots, rebuilds the mask; returns it."""
    merged, mask, counts["widenings"] = self._merge(
        steps, due, plans, self._plans.read_value(), base_mask)
    self._plans.assign(merged)
    self._mask.assign(mask)
    self._counters.assign_add(self._count_vector(counts))
    return mask

  def _count_vector(self, counts: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """int64 [len(COUNTERS)]: `counts` in the counters' order (0 where
    missing)."""
    return tf.stack([tf.cast(counts.get(name, 0), tf.int64)
                     for name in COUNTERS])

  def _items(self, plans: tf.Tensor) -> tf.Tensor:
    """bool [B, N]: the items with a category in `plans` (bool [B, C])."""
    padded = tf.pad(plans, [[0, 0], [0, 1]])  # column C: no category
    return tf.reduce_any(tf.gather(padded, self._item_category_table, axis=1),
                         axis=2)

  def _merge_plans(self, steps, due: tf.Tensor, plans: tf.Tensor,
                   current: tf.Tensor, base_mask: tf.Tensor
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(plans, mask, widened plans): `plans` for the due slots, the others
    kept; plans too small for a slate under `base_mask` get more categories
    in the widener's ranking order."""
    plans = tf.where(due[:, None], plans, current)
    mask = self._items(plans) & base_mask
    short = tf.reduce_sum(tf.cast(mask, tf.int32), 1) < self._slate_size

    def widen() -> tuple[tf.Tensor, tf.Tensor]:
      ranking = self._widener.ranking(steps)
      widened = plans
      for i in range(self._num_categories):
        room = tf.reduce_sum(tf.cast(self._items(widened) & base_mask,
                                     tf.int32), 1)
        widened |= (room < self._slate_size)[:, None] & tf.one_hot(
            ranking[:, i], self._num_categories, on_value=True,
            off_value=False)
      return widened, self._items(widened) & base_mask

    plans, mask = tf.cond(tf.reduce_any(short), widen, lambda: (plans, mask))
    return plans, mask, tf.reduce_sum(tf.cast(short, tf.int64))

  def _apply_plans(self, plans: tf.Tensor, slots: tf.Tensor) -> None:
    """Replaces the plans of `slots` (the LLM's answers) and the mask."""
    observation = self._env.current_time_step().observation
    due = tf.scatter_nd(slots[:, None], tf.ones_like(slots, tf.bool),
                        [self.batch_size])
    full = tf.scatter_nd(slots[:, None], plans,
                         [self.batch_size, self._num_categories])
    self._set_plans(self._steps(observation["observation"]), due, full,
                    observation["mask"], {})

  # --- TFEnvironment --------------------------------------------------------

  def _with_mask(self, time_step: ts.TimeStep, mask: tf.Tensor) -> ts.TimeStep:
    return time_step._replace(observation=dict(time_step.observation,
                                               mask=mask))

  def _current_time_step(self) -> ts.TimeStep:
    return self._with_mask(self._env.current_time_step(),
                           self._mask.read_value())

  def _reset(self) -> ts.TimeStep:
    return self._replan(self._env.reset())

  def _step(self, action: tf.Tensor) -> ts.TimeStep:
    slates = tf.reshape(tf.cast(action, tf.int32),
                        [self.batch_size, self._slate_size])
    with tf.control_dependencies([self._env.check_actions(slates,
                                                          self._mask)]):
      time_step = self._env.step(action)
    return self._replan(time_step)

  # --- between graph calls ------------------------------------------------

  def step_report(self) -> dict[str, Any]:
    report = self._env.step_report()
    if self._llm is not None:
      report.update(
          observation=self._env.current_time_step().observation["observation"],
          due=self._due.read_value(), missed=self._missed.read_value(),
          keys=self._keys.read_value())
    return report

  def absorb_reports(self, reports: Report) -> None:
    """Metrics and lessons about ended sessions; the LLM's answers for the
    situations the table did not hold."""
    self._env.absorb_reports(reports)
    if self._llm is None:
      return
    start = time.perf_counter()
    try:
      self._serve_planner(reports)
    finally:
      self._planner_seconds += time.perf_counter() - start

  def _history(self, observation: Mapping[str, np.ndarray], slot: int):
    return planner_environment.observation_history(observation, slot,
                                                   self._item_category_ids)

  def _reflection_pool_size(self) -> int:
    pool = getattr(self._planner, "reflections", None)
    return -1 if pool is None else len(pool)

  def _serve_planner(self, reports: Report) -> None:
    wait = self._wait
    wait_args = () if wait else (False,)
    asked: dict[Any, tuple[Any, int, bool]] = {}
    for t, step_type in enumerate(reports["step_type"]):
      observation = {k: v[t] for k, v in reports["observation"].items()}
      ended = np.flatnonzero(step_type == ts.StepType.LAST)
      if ended.size and self._llm.writes_lessons:
        self._planner.end_sessions(
            [self._history(observation, s) for s in ended], *wait_args)
      ask = reports["missed"][t]
      if self._pool_size != self._reflection_pool_size():
        self._pool_size = self._reflection_pool_size()
        stale = self._drop_stale_plans()
        if wait:  # as the Python environment, which plans after the lessons
          ask = ask | (reports["due"][t] & np.isin(reports["keys"][t], stale))
      slots = np.flatnonzero(ask)
      if wait:  # every slot planned (and counted) as the Python env does
        for slot in slots:
          asked[(int(reports["keys"][t][slot]), int(slot))] = (
              self._history(observation, slot), int(slot),
              bool(reports["missed"][t][slot]))
        self._ask(asked, wait=True)
        asked = {}
        continue
      keys, first, counts = np.unique(reports["keys"][t][slots],
                                      return_index=True, return_counts=True)
      for key, slot, count in zip(keys.tolist(), slots[first], counts):
        self._misses[key] += int(count)
        if key not in self._examples:
          self._examples[key] = self._history(observation, slot)
    if not wait:
      due = int(np.sum(reports["due"]))
      missed = int(np.sum(reports["missed"]))
      self._llm.hurry(missed > (1.0 - LLM_SHARE_TO_REST) * due)
      self._ask_most_missed()

  def _ask_most_missed(self) -> None:
    """Background: keeps a few requests in flight, for the situations whose
    users missed the table most often so far, so that the LLM's scarce
    answers cover as many plans as they can; once new answers have come
    back, the situations asked before are looked up again."""
    self._expire_failing()
    answers = self._llm.poll_background()
    recheck: set[int] = set()
    if answers != self._answers_seen:
      self._answers_seen = answers
      recheck, self._unanswered = self._unanswered, set()
    room = self._max_in_flight - self._llm.background_pending
    chosen = heapq.nlargest(
        room, (k for k in self._misses if k not in recheck
               and k not in self._unanswered),
        key=self._misses.__getitem__) if room > 0 else []
    self._ask({key: (self._examples[key], -1, True)
               for key in [*recheck, *chosen]}, wait=False)

  def _expire_failing(self) -> None:
    """Unmarks the failing situations whose back-off has ended, so that
    their next users are reported and the planner asks again."""
    now = time.monotonic()
    expired = [key for key, until in self._failing.items() if until <= now]
    if expired:
      self._table.remove(tf.constant(expired, tf.int64))
      for key in expired:
        del self._failing[key]

  def _drop_stale_plans(self) -> list[int]:
    """Removes the stored answers (plans, or failed replies' marks) whose
    prompt a new lesson changed (a lesson enters only the prompts whose
    sampled lessons it displaces); returns their keys."""
    stored = list(self._stored.items())
    now = self._llm.prompt_keys([history for _, (history, _) in stored])
    stale = [key for (key, (_, prompt)), current in zip(stored, now)
             if current != prompt]
    if stale:
      self._table.remove(tf.constant(stale, tf.int64))
      for key in stale:
        del self._stored[key]
        self._failing.pop(key, None)
    return stale

  def _ask(self, asked: Mapping[Any, tuple[Any, int, bool]],
           wait: bool) -> None:
    """Asks the planner about situations the table lacks and stores its
    answers; waiting, the asking slots get them (or the heuristic's) now."""
    if not asked:
      return
    entries = list(asked.values())
    keys = [k[0] if wait else k for k in asked]
    histories = [history for history, _, _ in entries]
    answers = self._llm.llm_answers(histories, wait)
    c = self._num_categories
    rows = np.zeros((len(entries), c), np.int32)  # what the table stores
    plans = np.zeros((len(entries), c), bool)  # the asking users' plans
    fallback = [i for i, a in enumerate(answers)
                if not isinstance(a, (tuple, CategoryScores))]
    for i, plan in zip(fallback, self._llm.fallback.plan(
        [histories[i] for i in fallback]) if wait else ()):
      plans[i, list(plan)] = True
    scored = [i for i, a in enumerate(answers) if isinstance(a, CategoryScores)]
    for i, plan in zip(scored, self._llm.plans_from_scores(
        [answers[i] for i in scored], [histories[i] for i in scored])):
      plans[i, list(plan)] = True
      rows[i] = preference_row(answers[i])
    for i, answer in enumerate(answers):
      if isinstance(answer, tuple):
        plans[i, list(answer)] = True
        rows[i] = plans[i]
    self._unanswered.update(k for k, a in zip(keys, answers) if a is None)
    if not wait:
      for key, answer in zip(keys, answers):
        if answer is not None:  # in the table now, as a plan or a mark
          self._misses.pop(key, None)
          self._examples.pop(key, None)
      self._mark_failing({k: a for k, a in zip(keys, answers)
                          if isinstance(a, Fallback)})
    stored = [i for i, a in enumerate(answers)
              if isinstance(a, (tuple, CategoryScores))]
    if stored:
      self._table.insert(tf.constant([keys[i] for i in stored], tf.int64),
                         tf.constant(rows[stored]))
    # Plans and (background) replies that failed validation are the model's
    # answers to their prompts: a lesson that changes the prompt drops them.
    answered = stored + [i for i, a in enumerate(answers) if not wait
                         and isinstance(a, Fallback) and a.retry_at is None]
    if answered:
      histories = [entries[i][0] for i in answered]
      for i, history, prompt in zip(answered, histories,
                                    self._llm.prompt_keys(histories)):
        self._stored[keys[i]] = (history, prompt)
    if wait:
      self._apply(tf.constant(plans),
                  tf.constant([slot for _, slot, _ in entries], tf.int32))
      self._llm_plan_adjustment += sum(
          isinstance(a, (tuple, CategoryScores)) - (not missed)
          for a, (_, _, missed) in zip(answers, entries))

  def _mark_failing(self, failed: Mapping[int, Fallback]) -> None:
    """Marks situations failing in the table until their retry time (for
    good where the model's reply failed validation)."""
    if not failed:
      return
    rows = np.zeros((len(failed), self._num_categories), np.int32)
    rows[:, 0] = [FAILING - FALLBACK_CAUSES.index(f.cause)
                  for f in failed.values()]
    self._table.insert(tf.constant(list(failed), tf.int64), tf.constant(rows))
    self._failing.update({key: math.inf if f.retry_at is None else f.retry_at
                          for key, f in failed.items()})


def category_table(item_category_ids: Sequence[tuple[int, ...]],
                   num_categories: int) -> np.ndarray:
  """int32 [N, m]: each item's category ids, padded with `num_categories`,
  m the most categories of any item: an item's place in a plan's mask is
  then m lookups (one in single-category catalogues), not a product with
  the whole [C, N] matrix."""
  most = max([len(ids) for ids in item_category_ids] + [1])
  table = np.full((len(item_category_ids), most), num_categories, np.int32)
  for item, ids in enumerate(item_category_ids):
    table[item, :len(ids)] = ids
  return table


def make_tf_env(scenario: str = "interest_evolution",
                num_users: int = environment_lib.DEFAULT_NUM_USERS,
                seed: int = 0, **overrides: Any) -> TFRecSimEnvironment:
  """The TensorFlow-native twin of `lerl_recsim.make_env` (same arguments,
  same trajectories for a seed and actions)."""
  return TFRecSimEnvironment(
      environment_lib.build_scenario(scenario, num_users, seed, **overrides),
      seed=int(seed))


def make_planned_tf_env(scenario: str | TFRecSimEnvironment = (
                            "interest_evolution"),
                        planner: str | HeuristicPlanner | Planner = "embedded",
                        replan_every: int = (
                            planner_environment.DEFAULT_REPLAN_EVERY),
                        num_users: int | None = None, seed: int = 0, *,
                        wait_for_planner: bool = True,
                        model_options: Mapping[str, Any] | None = None,
                        planner_options: Mapping[str, Any] | None = None,
                        **overrides: Any) -> PlannedTFEnvironment:
  """The TensorFlow-native twin of `planner_environment.make_planned_env`
  (same arguments and planner defaults; a ready environment is a
  `TFRecSimEnvironment`)."""
  planner_environment.check_replan_every(replan_every)
  env = planner_environment.scenario_environment(scenario, make_tf_env,
                                                 num_users, seed, overrides)
  planner = planner_environment.build_planner(
      planner, env.scenario.catalogue, seed, model_options, planner_options,
      background=not wait_for_planner)
  return PlannedTFEnvironment(env, planner, replan_every, seed=seed,
                              wait_for_planner=wait_for_planner)
