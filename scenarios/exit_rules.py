"""User exit rules: when a simulated user leaves the session.

Each rule is a RecSim NG entity with its own state, updated once per step
from the slate and the user's response. The published rules are implemented
as defined by their sources (see DESIGN.md §2 and the README table);
`satisfaction` is this project's default. Every rule also ends a session at
`max_session_length` steps; that end is a truncation, not a departure.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import tensorflow as tf
from gym import spaces
from recsim_ng.core import value
from recsim_ng.lib.tensorflow import entity, field_spec

from lerl_recsim.scenarios import params

Value = value.Value
ValueSpec = value.ValueSpec
Space = field_spec.Space


def _box(shape: tuple[int, ...], dtype: Any = np.float32) -> Space:
  return Space(spaces.Box(-np.inf, np.inf, shape=shape, dtype=dtype))


@dataclasses.dataclass(frozen=True)
class SlateOutcome:
  """What an exit rule may look at after one step, all batched over users.

  Attributes:
    categories: float32 [U, k, C], multi-hot categories of each slate item.
    responses: float32 [U, k], engagement at each slate position (0 unless
      that item was chosen).
    clicked: float32 [U], 1 if an item was chosen.
    chosen_quality: float32 [U], quality of the chosen item (0 if none).
    chosen_length: float32 [U], length of the chosen item (0 if none).
  """

  categories: tf.Tensor
  responses: tf.Tensor
  clicked: tf.Tensor
  chosen_quality: tf.Tensor
  chosen_length: tf.Tensor


class ExitRule(entity.Entity, metaclass=abc.ABCMeta):
  """Base entity: counts steps, applies the rule, caps the session length.

  State fields shared by all rules: `steps` (steps taken this session),
  `left` (1 once the user has left) and `truncated` (1 once the session hit
  its maximum length without the user leaving).
  """

  def __init__(self, num_users: int, num_categories: int, slate_size: int,
               max_session_length: int, rule_params: params.Params):
    super().__init__(name=type(self).__name__)
    self._num_users = num_users
    self._num_categories = num_categories
    self._slate_size = slate_size
    self._max_session_length = max_session_length
    self._params = rule_params

  @property
  def params(self) -> params.Params:
    return self._params

  @abc.abstractmethod
  def _rule_initial_state(self) -> dict[str, tf.Tensor]:
    """The rule's own state at the start of a session."""

  @abc.abstractmethod
  def _rule_next_state(self, state: Value,
                       outcome: SlateOutcome) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """The rule's next state and a bool [U] tensor: does the user leave?"""

  @abc.abstractmethod
  def _rule_specs(self) -> dict[str, Space]:
    """Specs of the rule's own state fields."""

  def initial_state(self) -> Value:
    zeros = tf.zeros([self._num_users])
    return Value(
        steps=tf.zeros([self._num_users], tf.int32), left=zeros,
        truncated=zeros, **self._rule_initial_state())

  def next_state(self, previous_state: Value, outcome: SlateOutcome) -> Value:
    rule_state, leaves = self._rule_next_state(previous_state, outcome)
    steps = previous_state.get("steps") + 1
    truncated = tf.logical_and(
        tf.logical_not(leaves), steps >= self._max_session_length)
    return Value(
        steps=steps, left=tf.cast(leaves, tf.float32),
        truncated=tf.cast(truncated, tf.float32), **rule_state)

  def specs(self) -> ValueSpec:
    u = self._num_users
    return ValueSpec(
        steps=_box((u,), np.int32), left=_box((u,)), truncated=_box((u,)),
        **self._rule_specs())


def _any_shared_category(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """bool [...]: do multi-hot category vectors a and b overlap?"""
  return tf.reduce_sum(a * b, axis=-1) > 0.0


@dataclasses.dataclass(frozen=True)
class TemperParams(params.Params):
  """LERL's temper: T0 = 20; -1 per step, -1 more on a position repeat."""

  initial_temper: float = 20.0
  step_cost: float = 1.0
  repeat_cost: float = 1.0
  _RANGES: ClassVar = {"initial_temper": (0.0, None), "step_cost": (0.0, None),
                       "repeat_cost": (0.0, None)}


class TemperRule(ExitRule):
  """Leaves when temper < 1; a position repeat is any slate position whose
  category equals the category at that position of the previous slate."""

  def _rule_initial_state(self):
    return {"temper": tf.fill([self._num_users], self._params.initial_temper),
            "previous_categories": tf.zeros(
                [self._num_users, self._slate_size, self._num_categories])}

  def _rule_next_state(self, state, outcome):
    p = self._params
    repeat = tf.reduce_any(
        _any_shared_category(outcome.categories,
                             state.get("previous_categories")), axis=-1)
    temper = (state.get("temper") - p.step_cost -
              p.repeat_cost * tf.cast(repeat, tf.float32))
    return ({"temper": temper, "previous_categories": outcome.categories},
            temper < 1.0)

  def _rule_specs(self):
    u, k, c = self._num_users, self._slate_size, self._num_categories
    return {"temper": _box((u,)), "previous_categories": _box((u, k, c))}


@dataclasses.dataclass(frozen=True)
class KuaiSimParams(params.Params):
  """KuaiSim's engagement temper: T += clip(mean response - offset, lo, hi)."""

  initial_temper: float = 20.0
  offset: float = 2.0
  min_change: float = -2.0
  max_change: float = 0.0
  _RANGES: ClassVar = {"initial_temper": (0.0, None), "max_change": (None, 0.0)}

  def __post_init__(self) -> None:
    super().__post_init__()
    if self.min_change > self.max_change:
      raise ValueError(
          f"KuaiSimParams.min_change={self.min_change} must not exceed "
          f"max_change={self.max_change}")


class KuaiSimRule(ExitRule):
  """Leaves when temper < 1; the mean slate response raises or lowers it."""

  def _rule_initial_state(self):
    return {"temper": tf.fill([self._num_users], self._params.initial_temper)}

  def _rule_next_state(self, state, outcome):
    p = self._params
    mean_response = tf.reduce_mean(outcome.responses, axis=-1)
    temper = state.get("temper") + tf.clip_by_value(
        mean_response - p.offset, p.min_change, p.max_change)
    return {"temper": temper}, temper < 1.0

  def _rule_specs(self):
    return {"temper": _box((self._num_users,))}


@dataclasses.dataclass(frozen=True)
class CategoryWindowParams(params.Params):
  """CIRS / DORL / EasyRL4Rec: leave when a category of a recommended item
  already appears more than `threshold` times among the last `window` items."""

  window: int = 4
  threshold: int = 0
  _RANGES: ClassVar = {"window": (1, None), "threshold": (0, None)}


CATEGORY_WINDOW_PRESETS: Mapping[str, dict[str, int]] = {
    # DORL (SIGIR'23): N = 4, threshold 0, at most 30 steps.
    "dorl": {"window": 4, "threshold": 0, "max_session_length": 30},
    # EasyRL4Rec (SIGIR'24) on KuaiRec: N = 9, threshold 1, at most 30 steps.
    "easyrl4rec": {"window": 9, "threshold": 1, "max_session_length": 30},
}


class CategoryWindowRule(ExitRule):
  """Checks every slate item against the items of earlier steps."""

  def _rule_initial_state(self):
    return {"recent_items": tf.zeros(
        [self._num_users, self._params.window, self._num_categories])}

  def _rule_next_state(self, state, outcome):
    recent = state.get("recent_items")
    counts = tf.reduce_sum(recent, axis=1)  # [U, C]
    over = tf.cast(counts > float(self._params.threshold), tf.float32)
    leaves = tf.reduce_any(
        _any_shared_category(outcome.categories, over[:, None, :]), axis=-1)
    recent = tf.concat([recent, outcome.categories],
                       axis=1)[:, -self._params.window:]
    return {"recent_items": recent}, leaves

  def _rule_specs(self):
    return {"recent_items": _box(
        (self._num_users, self._params.window, self._num_categories))}


@dataclasses.dataclass(frozen=True)
class BudgetParams(params.Params):
  """RecSim interest evolution's time budget (UtilityModelUserSampler)."""

  initial_budget: float = 200.0
  no_click_cost: float = 0.5
  refund_rate: float = 0.9 / 3.4
  _RANGES: ClassVar = {"initial_budget": (0.0, None),
                       "no_click_cost": (0.0, None), "refund_rate": (0.0, None)}


class BudgetRule(ExitRule):
  """A click costs its watch time min(budget, length) and refunds
  refund_rate * watch time * quality; a no-click costs no_click_cost; the user
  leaves when the budget is <= 0."""

  def _rule_initial_state(self):
    return {"budget": tf.fill([self._num_users], self._params.initial_budget)}

  def _rule_next_state(self, state, outcome):
    p = self._params
    budget = state.get("budget")
    watch = tf.minimum(budget, outcome.chosen_length)
    clicked_budget = (budget - watch +
                      p.refund_rate * watch * outcome.chosen_quality)
    budget = tf.where(outcome.clicked > 0.0, clicked_budget,
                      budget - p.no_click_cost)
    return {"budget": budget}, budget <= 0.0

  def _rule_specs(self):
    return {"budget": _box((self._num_users,))}


@dataclasses.dataclass(frozen=True)
class SatisfactionParams(params.Params):
  """Patience drained by low engagement and by repetition.

  Each step: patience -= engagement_weight * max(0, engagement_target - e)
                      + repetition_weight * r,
  where e is the engagement of the step (0 without a click) and r the share
  of slate items with a category shown in the previous `repetition_window`
  steps. The user leaves when patience <= 0.
  """

  initial_patience: float = 5.0
  engagement_target: float = 0.5
  engagement_weight: float = 1.0
  repetition_weight: float = 0.5
  repetition_window: int = 2
  _RANGES: ClassVar = {
      "initial_patience": (0.0, None), "engagement_target": (0.0, 1.0),
      "engagement_weight": (0.0, None), "repetition_weight": (0.0, None),
      "repetition_window": (1, None)}


class SatisfactionRule(ExitRule):
  """This project's default: both low engagement and repetition drain."""

  def _rule_initial_state(self):
    return {
        "patience": tf.fill([self._num_users], self._params.initial_patience),
        "recent_steps": tf.zeros([self._num_users,
                                  self._params.repetition_window,
                                  self._num_categories])}

  def _rule_next_state(self, state, outcome):
    p = self._params
    recent = state.get("recent_steps")
    seen = tf.cast(tf.reduce_sum(recent, axis=1) > 0.0, tf.float32)  # [U, C]
    repetition = tf.reduce_mean(tf.cast(
        _any_shared_category(outcome.categories, seen[:, None, :]),
        tf.float32), axis=-1)
    engagement = tf.reduce_sum(outcome.responses, axis=-1)
    patience = state.get("patience") - (
        p.engagement_weight * tf.nn.relu(p.engagement_target - engagement) +
        p.repetition_weight * repetition)
    shown = tf.cast(tf.reduce_sum(outcome.categories, axis=1) > 0.0, tf.float32)
    recent = tf.concat([recent, shown[:, None, :]],
                       axis=1)[:, -p.repetition_window:]
    return {"patience": patience, "recent_steps": recent}, patience <= 0.0

  def _rule_specs(self):
    u, w, c = (self._num_users, self._params.repetition_window,
               self._num_categories)
    return {"patience": _box((u,)), "recent_steps": _box((u, w, c))}


@dataclasses.dataclass(frozen=True)
class ExitRuleSpec:
  """A registered rule: its entity class, parameters and default cap."""

  rule_class: Callable[..., ExitRule]
  params_class: type[params.Params]
  default_max_session_length: int


EXIT_RULES: Mapping[str, ExitRuleSpec] = {
    "satisfaction": ExitRuleSpec(SatisfactionRule, SatisfactionParams, 100),
    "temper": ExitRuleSpec(TemperRule, TemperParams, 100),
    "kuaisim": ExitRuleSpec(KuaiSimRule, KuaiSimParams, 100),
    "category_window": ExitRuleSpec(CategoryWindowRule, CategoryWindowParams, 30),
    "budget": ExitRuleSpec(BudgetRule, BudgetParams, 100),
}


def resolve_exit_rule(name: str, rule_params: Mapping[str, Any] | None,
                      max_session_length: int | None
                      ) -> tuple[ExitRuleSpec, params.Params, int]:
  """Validates a rule name and its parameters; applies presets.

  `category_window` accepts `preset="dorl"` or `preset="easyrl4rec"` among
  its parameters, which sets the published window, threshold and cap.
  """
  if name not in EXIT_RULES:
    raise ValueError(f"unknown exit rule {name!r}; accepted: {sorted(EXIT_RULES)}")
  spec = EXIT_RULES[name]
  values = dict(rule_params or {})
  cap = spec.default_max_session_length
  preset = values.pop("preset", None)
  if preset is not None:
    if name != "category_window" or preset not in CATEGORY_WINDOW_PRESETS:
      raise ValueError(
          f"unknown preset {preset!r} for exit rule {name!r}; presets exist "
          f"only for 'category_window': {sorted(CATEGORY_WINDOW_PRESETS)}")
    preset_values = dict(CATEGORY_WINDOW_PRESETS[preset])
    cap = preset_values.pop("max_session_length")
    values = {**preset_values, **values}
  if max_session_length is not None:
    cap = max_session_length
  if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
    raise ValueError(f"max_session_length must be an int >= 1, got {cap!r}")
  return spec, spec.params_class.from_dict(values), cap
