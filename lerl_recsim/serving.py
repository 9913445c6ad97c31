"""The hierarchical recommender served from a bundle written by lerl-export.

  from lerl_recsim.serving import HierarchicalRecommender, Step

  recommender = HierarchicalRecommender.load("bundles/lerl")
  items = recommender.recommend([
      Step(items=[12], clicked=12, engagement=0.7),
      Step(items=[40], clicked=None),           # shown, not clicked
  ])

A history is the user's current session so far, oldest step first: every
step the items shown (a slate of the bundle's slate size) and which of them
was clicked, if any, with the engagement it earned (0 without a click), in
the scenario's units, [0, 1]. Plain dicts with the keys `items`, `clicked`
and `engagement` work too. From it the recommender rebuilds the observation
the training environment would have produced, asks the planner for
categories as the training wrapper did, turns them into the item mask and
calls the SavedModel policy with that mask.

Plans follow the replan interval K without keeping state per user: the plan
for a session of length L is the plan for its first L - L mod K steps, the
point where the training wrapper last replanned. Planners answer equal
situations from their caches, so this costs little.

The low level alone loads with plain TensorFlow (see docs/serving.md):

  import tensorflow as tf
  import tensorflow_probability as tfp
  dir(tfp.experimental)  # registers the TFP types of the policy signature
  policy = tf.saved_model.load("bundles/lerl/policy")

`dir(tfp.experimental)` is needed whatever the import order (TFP registers
those types at import only when TensorFlow came first); `lerl_recsim` and
TF_USE_LEGACY_KERAS are not needed to load or call the policy.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from lerl_recsim import bundle, planner_environment
from lerl_recsim.planner import HeuristicPlanner


@dataclasses.dataclass(frozen=True)
class Step:
  """One step of a session.

  Attributes:
    items: The item ids shown (as many as the slate size).
    clicked: The item id the user chose, or None.
    engagement: What the click earned, in [0, 1]; 0 without a click.
  """

  items: Sequence[int]
  clicked: int | None = None
  engagement: float = 0.0


@dataclasses.dataclass(frozen=True)
class Recommendation:
  """A recommendation and why it is allowed.

  Attributes:
    items: The recommended item ids (one slate).
    categories: The plan's category ids, or None without a planner.
    allowed: bool [N], the mask the policy chose under.
  """

  items: tuple[int, ...]
  categories: tuple[int, ...] | None
  allowed: np.ndarray


def _integer(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_step(step: Step | Mapping[str, Any], index: int,
               facts: bundle.ScenarioFacts) -> Step:
  """A checked Step; ValueError/TypeError name the step and the bad value."""
  where = f"history step {index}"
  if isinstance(step, Mapping):
    unknown = sorted(set(step) - {"items", "clicked", "engagement"})
    if unknown or "items" not in step:
      raise ValueError(
          f"{where} has keys {sorted(step)}; expected 'items' and optionally "
          "'clicked' and 'engagement'")
    step = Step(step["items"], step.get("clicked"), step.get("engagement", 0.0))
  elif not isinstance(step, Step):
    raise TypeError(f"{where} is a {type(step).__name__}; expected a Step or "
                    "a dict with 'items', 'clicked', 'engagement'")
  items = step.items
  if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) \
      or not all(_integer(i) for i in items):
    raise TypeError(f"{where}: items {items!r} must be a list of int item ids")
  items = tuple(int(i) for i in items)
  if len(items) != facts.slate_size:
    raise ValueError(f"{where} shows {len(items)} items {list(items)}; the "
                     f"bundle's slate size is {facts.slate_size}")
  unknown = [i for i in items if not 0 <= i < facts.num_items]
  if unknown:
    raise ValueError(f"{where}: unknown item ids {unknown}; expected ids in "
                     f"[0, {facts.num_items - 1}]")
  if len(set(items)) != len(items):
    raise ValueError(f"{where} repeats items in its slate {list(items)}")
  clicked = step.clicked
  if clicked is not None and (not _integer(clicked) or clicked not in items):
    raise ValueError(f"{where}: clicked {clicked!r} is not one of the items "
                     f"shown {list(items)} (use None for no click)")
  engagement = step.engagement
  if not isinstance(engagement, numbers.Real) or isinstance(engagement, bool) \
      or not math.isfinite(engagement) or not 0.0 <= engagement <= 1.0:
    raise ValueError(f"{where}: engagement {engagement!r} must be a number "
                     "in [0, 1]")
  if clicked is None and engagement != 0.0:
    raise ValueError(f"{where}: engagement {engagement!r} without a click; "
                     "expected 0 when clicked is None")
  return Step(items, None if clicked is None else int(clicked),
              float(engagement))


def parse_history(history: Sequence[Step | Mapping[str, Any]],
                  facts: bundle.ScenarioFacts) -> tuple[Step, ...]:
  if isinstance(history, (str, bytes, Mapping)) \
      or not isinstance(history, Sequence):
    raise TypeError(f"a history must be a list of steps, oldest first; got "
                    f"a {type(history).__name__}")
  if len(history) > facts.max_session_length:
    raise ValueError(
        f"the history has {len(history)} steps; sessions of this bundle's "
        f"scenario last at most {facts.max_session_length}")
  return tuple(parse_step(step, i, facts) for i, step in enumerate(history))


def observe(steps: Sequence[Step], facts: bundle.ScenarioFacts
            ) -> dict[str, np.ndarray]:
  """The environment's observation after `steps` (checked Steps), unbatched.

  Mirrors `scenarios/session_history.py` in float32: the last H slates
  (-1 padding, most recent last), clicks and engagement at the chosen
  position, per-category counts and engagement where an item of n
  categories counts 1/n for each, the session length and mean engagement.
  """
  h, k, c = facts.history_length, facts.slate_size, facts.num_categories
  item_history = np.full((h, k), -1, np.int32)
  click_history = np.zeros((h, k), np.float32)
  response_history = np.zeros((h, k), np.float32)
  counts = np.zeros(c, np.float32)
  engagement_per_category = np.zeros(c, np.float32)
  total = np.float32(0.0)
  for t, step in enumerate(steps):
    categories = facts.item_categories[list(step.items)]
    shares = categories / categories.sum(axis=-1, keepdims=True)
    clicks = np.zeros(k, np.float32)
    if step.clicked is not None:
      clicks[step.items.index(step.clicked)] = 1.0
    responses = clicks * np.float32(step.engagement)
    counts = counts + shares.sum(axis=0)
    engagement_per_category = engagement_per_category + responses @ shares
    total = total + np.float32(step.engagement)
    row = t - len(steps) + h
    if row >= 0:
      item_history[row] = step.items
      click_history[row] = clicks
      response_history[row] = responses
  length = len(steps)
  mean = total / np.float32(length) if length else np.float32(0.0)
  return {"item_history": item_history, "click_history": click_history,
          "response_history": response_history, "category_counts": counts,
          "category_engagement": engagement_per_category,
          "session_length": np.int32(length),
          "mean_engagement": np.float32(mean)}


def stack(observations: Sequence[Mapping[str, np.ndarray]]
          ) -> dict[str, np.ndarray]:
  return {name: np.stack([o[name] for o in observations])
          for name in observations[0]}


def observation_fields(facts: bundle.ScenarioFacts
                       ) -> dict[str, tuple[tuple[int, ...], str]]:
  """Per observation field, its shape for one user and its kind ("int" or
  "float"), as `observe` and the environment produce them."""
  h, k, c = facts.history_length, facts.slate_size, facts.num_categories
  return {"item_history": ((h, k), "int"), "click_history": ((h, k), "float"),
          "response_history": ((h, k), "float"),
          "category_counts": ((c,), "float"),
          "category_engagement": ((c,), "float"),
          "session_length": ((), "int"), "mean_engagement": ((), "float")}


def check_observation(observation: Mapping[str, Any], mask: Any,
                      facts: bundle.ScenarioFacts
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """A batch of environment observations and item masks, checked and cast
  to the policy's dtypes; ValueError/TypeError name the bad field."""
  if not isinstance(observation, Mapping):
    raise TypeError(f"observation must be a dict of arrays; got a "
                    f"{type(observation).__name__}")
  fields = observation_fields(facts)
  if set(observation) != set(fields):
    raise ValueError(
        f"observation has fields {sorted(observation)}; expected "
        f"{sorted(fields)}")
  checked: dict[str, np.ndarray] = {}
  batch = None
  for name, (shape, kind) in fields.items():
    value = np.asarray(observation[name])
    if value.dtype == object or not (np.issubdtype(value.dtype, np.number)
                                     or value.dtype == bool):
      raise TypeError(f"observation field {name!r} has dtype {value.dtype}; "
                      f"expected {kind}s")
    if kind == "int" and not np.issubdtype(value.dtype, np.integer):
      raise TypeError(f"observation field {name!r} has dtype {value.dtype}; "
                      "expected integers")
    if value.shape[1:] != shape or value.ndim != len(shape) + 1:
      raise ValueError(f"observation field {name!r} has shape {value.shape}; "
                       f"expected [batch, {', '.join(map(str, shape))}]"
                       .replace(", ]", "]"))
    if batch is not None and value.shape[0] != batch:
      raise ValueError(f"observation field {name!r} holds {value.shape[0]} "
                       f"users; the other fields {batch}")
    batch = value.shape[0]
    if kind == "float" and not np.isfinite(value).all():
      raise ValueError(f"observation field {name!r} holds non-finite values")
    checked[name] = value.astype(np.int32 if kind == "int" else np.float32)
  items = checked["item_history"]
  unknown = np.unique(items[(items < -1) | (items >= facts.num_items)])
  if unknown.size:
    raise ValueError(f"observation field 'item_history' holds unknown item "
                     f"ids {unknown.tolist()[:8]}; expected ids in "
                     f"[0, {facts.num_items - 1}], or -1 for no step")
  lengths = checked["session_length"]
  if ((lengths < 0) | (lengths > facts.max_session_length)).any():
    raise ValueError(f"observation field 'session_length' holds "
                     f"{lengths.tolist()[:8]}; expected values in "
                     f"[0, {facts.max_session_length}]")
  mask = np.asarray(mask)
  if mask.dtype != bool:
    raise TypeError(f"mask has dtype {mask.dtype}; expected bool")
  if mask.shape != (batch, facts.num_items):
    raise ValueError(f"mask has shape {mask.shape}; expected "
                     f"[{batch}, {facts.num_items}] (users, items)")
  short = np.flatnonzero(mask.sum(axis=1) < facts.slate_size)
  if short.size:
    raise ValueError(f"mask allows fewer than {facts.slate_size} item(s) for "
                     f"user(s) {short.tolist()[:8]}; a slate needs at least "
                     "that many")
  return checked, mask


class HierarchicalRecommender:
  """Planner (high level) + SavedModel policy (low level) for serving.

  Build it with `load`. `recommend(history)` gives item ids;
  `recommend_batch(histories)` plans all users in one planner call and one
  policy call, and returns the plans and masks too; `act(observation,
  mask)` calls the low level on observations and masks the caller has.
  """

  def __init__(self, policy: Any, spec: Mapping[str, Any],
               facts: bundle.ScenarioFacts,
               planner: planner_environment.PlannerLike | None,
               replan_every: int, backend: str) -> None:
    self._policy = policy
    self._spec = spec
    self._facts = facts
    self._planner = planner
    self._replan_every = planner_environment.check_replan_every(replan_every)
    self._backend = backend
    # The catalogue's part of turning plans into masks, derived once.
    self._plan_masks = planner_environment.PlanMasks(
        facts.item_categories.T > 0, facts.slate_size,
        HeuristicPlanner(bundle.catalogue_from_json(spec["catalogue"]),
                         seed=spec["planner"]["seed"]), 0, unit="user")

  @classmethod
  def load(cls, path: str | os.PathLike[str],
           planner: str | planner_environment.PlannerLike | None = None,
           replan_every: int | None = None) -> "HierarchicalRecommender":
    """Loads a bundle.

    Args:
      path: The --export_dir of lerl-export.
      planner: None plans with the bundle's backend; a backend string
        (`heuristic`, `embedded`, `openai:MODEL`, ...) or a ready planner
        object overrides it; "none" serves without a planner (all items
        allowed). API keys come from the environment, as in training.
      replan_every: Overrides the bundle's replan interval K.
    """
    spec = bundle.read_spec(path)
    facts = bundle.ScenarioFacts.from_json(spec["scenario"])
    policy, signature = bundle.load_policy(
        pathlib.Path(path) / bundle.POLICY_DIR)
    signature.check(facts, f"the planner spec of bundle {os.fspath(path)!r}")
    settings = spec["planner"]
    choice = settings["backend"] if planner is None else planner
    if replan_every is None:
      replan_every = (settings["replan_every"]
                      or planner_environment.DEFAULT_REPLAN_EVERY)
    if choice is None or choice == bundle.NO_PLANNER:
      return cls(policy, spec, facts, None, replan_every, bundle.NO_PLANNER)
    if not isinstance(choice, str):
      return cls(policy, spec, facts, choice, replan_every,
                 type(choice).__name__)
    reflections = settings["reflections"]
    planner_object = bundle.planner_from_spec(
        spec, choice,
        pathlib.Path(path) / reflections if reflections else None,
        settings["seed"])
    return cls(policy, spec, facts, planner_object, replan_every, choice)

  @property
  def backend(self) -> str:
    """The planner backend in use ("none" without a planner)."""
    return self._backend

  @property
  def replan_every(self) -> int:
    return self._replan_every

  @property
  def facts(self) -> bundle.ScenarioFacts:
    return self._facts

  @property
  def category_names(self) -> tuple[str, ...]:
    return tuple(self._spec["catalogue"]["category_names"])

  @property
  def planner(self) -> planner_environment.PlannerLike | None:
    return self._planner

  def observation(self, history: Sequence[Step | Mapping[str, Any]]
                  ) -> dict[str, np.ndarray]:
    """The observation (without mask) the environment would show."""
    return observe(parse_history(history, self._facts), self._facts)

  def recommend(self, history: Sequence[Step | Mapping[str, Any]]
                ) -> list[int]:
    """Item ids for one user's next step (a slate of the bundle's size)."""
    return list(self.recommend_batch([history])[0].items)

  def recommend_batch(self, histories: Sequence[Sequence[Any]]
                      ) -> list[Recommendation]:
    """One recommendation per history, from one plan and one policy call."""
    if isinstance(histories, (str, bytes)) or not isinstance(histories,
                                                            Sequence):
      raise TypeError(f"histories must be a list of histories; got a "
                      f"{type(histories).__name__}")
    if not histories:
      return []
    sessions = [parse_history(h, self._facts) for h in histories]
    observation = stack([observe(s, self._facts) for s in sessions])
    plans, masks = self._plan(sessions)
    actions = self._act(observation, masks)
    recommendations = []
    for user, (plan, mask, slate) in enumerate(zip(plans, masks, actions)):
      if not mask[slate].all():
        raise RuntimeError(
            f"the policy recommended {slate.tolist()} for user {user}, "
            "outside its mask; the bundle's policy ignores the mask input")
      mask.setflags(write=False)
      recommendations.append(Recommendation(tuple(slate.tolist()), plan, mask))
    return recommendations

  def act(self, observation: Mapping[str, Any], mask: Any) -> np.ndarray:
    """The low level alone: slates (int [B, k]) for a batch of environment
    observations and item masks (bool [B, N]), e.g. an environment's own
    time step. Both are checked first: a malformed field, an unknown item
    id or a mask that leaves too few items is a ValueError/TypeError naming
    it."""
    observation, mask = check_observation(observation, mask, self._facts)
    return self._act(observation, mask)

  def _plan(self, sessions: Sequence[tuple[Step, ...]]
            ) -> tuple[list[tuple[int, ...] | None], np.ndarray]:
    """Plans at each session's last replan point; plans and masks [B, N]."""
    masks = np.ones((len(sessions), self._facts.num_items), bool)
    if self._planner is None:
      return [None] * len(sessions), masks
    planned = stack([observe(s[:len(s) - len(s) % self._replan_every],
                             self._facts) for s in sessions])
    # Fresh plans per call: concurrent calls share no state.
    plan_masks = self._plan_masks.fresh(len(sessions))
    users = range(len(sessions))
    plan_masks.set(users, self._planner.plan(
        [plan_masks.history(planned, user) for user in users]))
    masks, _ = plan_masks.masks(planned, masks)
    return list(plan_masks.plans), masks

  def _act(self, observation: Mapping[str, np.ndarray],
           masks: np.ndarray) -> np.ndarray:
    """The policy's slates, int [B, k]."""
    batch = masks.shape[0]
    step_type = np.where(observation["session_length"] > 0, ts.StepType.MID,
                         ts.StepType.FIRST).astype(np.int32)
    time_step = ts.TimeStep(
        step_type=tf.constant(step_type),
        reward=tf.zeros([batch], tf.float32),
        discount=tf.ones([batch], tf.float32),
        observation={"observation": {name: tf.constant(value) for name, value
                                     in observation.items()},
                     "mask": tf.constant(masks)})
    action = self._policy.action(time_step).action.numpy()
    return action.reshape(batch, self._facts.slate_size)
