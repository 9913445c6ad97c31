"""Each exit rule against its published definition, on crafted sequences."""

import numpy as np
import pytest
import tensorflow as tf

from lerl_recsim.scenarios import exit_rules

C = 20


def outcome(categories, engagement=0.0, clicked=None, quality=0.0, length=4.0):
  """One user's step: `categories` is one category id per slate position."""
  cats = tf.one_hot([categories], C)
  k = len(categories)
  clicked = (engagement > 0) if clicked is None else clicked
  responses = np.zeros((1, k), np.float32)
  responses[0, 0] = engagement
  return exit_rules.SlateOutcome(
      categories=cats, responses=tf.constant(responses),
      clicked=tf.constant([float(clicked)]),
      chosen_quality=tf.constant([quality if clicked else 0.0]),
      chosen_length=tf.constant([length if clicked else 0.0]))


def run(name, steps, params=None, max_session_length=None, slate_size=1):
  """Feeds outcomes until the user leaves; returns (leave step or None, state)."""
  spec, rule_params, cap = exit_rules.resolve_exit_rule(
      name, params, max_session_length)
  rule = spec.rule_class(1, C, slate_size, cap, rule_params)
  state = rule.initial_state()
  for step, step_outcome in enumerate(steps, start=1):
    state = rule.next_state(state, step_outcome)
    if state.get("left").numpy()[0] or state.get("truncated").numpy()[0]:
      return step, state
  return None, state


def test_temper_repeat_costs_two_per_step():
  # T: 20 -> 19 (no previous slate), then -2 per repeat: 21 - 2n < 1 at n = 11.
  step, state = run("temper", [outcome([3])] * 30)
  assert step == 11
  assert state.get("temper").numpy()[0] == -1.0
  assert state.get("left").numpy()[0] == 1.0


def test_temper_without_repeats_lasts_twenty_steps():
  step, _ = run("temper", [outcome([i % 2]) for i in range(30)])
  assert step == 20  # 20 - n < 1 at n = 20


def test_integer_parameters_are_accepted_as_numbers():
  step, state = run("temper", [outcome([i % 2]) for i in range(30)],
                    params={"initial_temper": 4})
  assert step == 4 and state.get("temper").numpy()[0] == 0.0


def test_temper_compares_positions_not_sets():
  # [a, b] then [b, a]: same categories, no position repeat.
  steps = [outcome([1, 2]), outcome([2, 1])]
  _, state = run("temper", steps, slate_size=2)
  assert state.get("temper").numpy()[0] == 18.0
  _, state = run("temper", [outcome([1, 2]), outcome([5, 2])], slate_size=2)
  assert state.get("temper").numpy()[0] == 17.0


def test_kuaisim_temper_follows_clipped_mean_response():
  # No engagement: += clip(0 - 2, -2, 0) = -2 per step: 20 - 2n < 1 at n = 10.
  step, _ = run("kuaisim", [outcome([0])] * 30)
  assert step == 10
  # Engagement 1: -1 per step, leaves at n = 20.
  step, _ = run("kuaisim", [outcome([0], engagement=1.0)] * 30)
  assert step == 20
  # Offset 0.5: clip(1 - 0.5, -2, 0) = 0, the temper never falls.
  step, state = run("kuaisim", [outcome([0], engagement=1.0)] * 30,
                    params={"offset": 0.5}, max_session_length=30)
  assert state.get("temper").numpy()[0] == 20.0
  assert state.get("truncated").numpy()[0] == 1.0 and step == 30


def test_category_window_dorl_leaves_on_any_repeat_in_last_four():
  step, _ = run("category_window", [outcome([c]) for c in (0, 1, 2, 0)],
                params={"preset": "dorl"})
  assert step == 4
  # 0 appears again only after four other items: it left the window.
  step, _ = run("category_window", [outcome([c]) for c in (0, 1, 2, 3, 4, 0)],
                params={"preset": "dorl"})
  assert step is None


def test_category_window_easyrl4rec_allows_one_repeat_in_nine():
  sequence = [outcome([c]) for c in (0, 1, 0, 2, 0)]
  step, _ = run("category_window", sequence, params={"preset": "easyrl4rec"})
  assert step == 5  # the third 0: two earlier ones > threshold 1
  step, _ = run("category_window", sequence[:3], params={"preset": "easyrl4rec"})
  assert step is None


def test_category_window_presets_cap_sessions_at_thirty():
  _, _, cap = exit_rules.resolve_exit_rule("category_window",
                                           {"preset": "dorl"}, None)
  assert cap == 30
  step, state = run("category_window", [outcome([i % 20]) for i in range(40)],
                    params={"preset": "dorl"})
  assert step == 30 and state.get("truncated").numpy()[0] == 1.0
  assert state.get("left").numpy()[0] == 0.0


def test_budget_charges_watch_time_refunds_quality_and_penalises_no_click():
  refund = 0.9 / 3.4
  _, state = run("budget", [outcome([0], engagement=0.5, quality=1.0)])
  assert state.get("budget").numpy()[0] == pytest.approx(200 - 4 + refund * 4)
  _, state = run("budget", [outcome([0], clicked=False)])
  assert state.get("budget").numpy()[0] == pytest.approx(199.5)
  # Watch time is capped by what is left: min(1, 4) = 1, budget -> 0 -> leave.
  step, _ = run("budget", [outcome([0], engagement=0.5)],
                params={"initial_budget": 1.0})
  assert step == 1


def test_satisfaction_repetition_drains_patience():
  # Engagement at the target: only repetition drains, 0.5 per repeated step.
  step, state = run("satisfaction", [outcome([0], engagement=0.5)] * 30)
  assert step == 11  # 5 - 0.5 (n - 1) <= 0 at n = 11
  assert state.get("left").numpy()[0] == 1.0


def test_satisfaction_low_engagement_drains_patience():
  # Three categories in rotation never repeat within a window of two steps;
  # no engagement drains 0.5 a step: 5 - 0.5 n <= 0 at n = 10.
  step, _ = run("satisfaction", [outcome([i % 3]) for i in range(30)])
  assert step == 10


def test_satisfaction_engaged_diverse_user_stays_to_the_cap():
  step, state = run("satisfaction",
                    [outcome([i % 3], engagement=0.6) for i in range(200)])
  assert step == 100
  assert state.get("truncated").numpy()[0] == 1.0
  assert state.get("patience").numpy()[0] == 5.0


@pytest.mark.parametrize("name, params, message", [
    ("nope", None, "unknown exit rule 'nope'"),
    ("temper", {"initial_temper": "high"}, "initial_temper must be a number"),
    ("temper", {"initial_temper": -1.0}, "initial_temper=-1.0 is out of range"),
    ("temper", {"temperature": 3}, "unknown TemperParams parameter"),
    ("category_window", {"window": 2.5}, "window must be an int"),
    ("category_window", {"preset": "cirs"}, "unknown preset 'cirs'"),
    ("kuaisim", {"min_change": 1.0, "max_change": 0.0}, "out of range|must not exceed"),
])
def test_bad_rule_parameters_are_named(name, params, message):
  with pytest.raises((ValueError, TypeError), match=message):
    exit_rules.resolve_exit_rule(name, params, None)
