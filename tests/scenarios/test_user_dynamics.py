"""Satiation, spill-over, interest evolution and choice, checked by hand."""

import numpy as np
import pytest
import tensorflow as tf
from recsim_ng.core import value

from lerl_recsim.scenarios import catalogue as catalogue_lib
from lerl_recsim.scenarios import seeding
from lerl_recsim.scenarios import user as user_lib

Value = value.Value
CATALOGUE = catalogue_lib.default_catalogue()
C = CATALOGUE.num_categories
FOOTBALL, BASKETBALL, JAZZ = (CATALOGUE.index("football"),
                              CATALOGUE.index("basketball"),
                              CATALOGUE.index("jazz"))


def make_user(num_users=1, **params):
  config = {"num_users": num_users, "num_topics": C, "slate_size": 1}
  return user_lib.SatiationUser(config, CATALOGUE,
                                user_lib.UserParams(**params))


def slate_of(category, num_users=1, quality=0.0):
  one_hot = tf.one_hot([[category]] * num_users, C)
  return Value(categories=one_hot, features=one_hot,
               quality=tf.fill([num_users, 1], quality),
               length=tf.fill([num_users, 1], 4.0))


def state(satiation=None, interest=None):
  return Value(
      interest=tf.constant(interest if interest is not None else np.zeros((1, C)),
                           tf.float32),
      satiation=tf.constant(satiation if satiation is not None else np.zeros((1, C)),
                            tf.float32))


def no_click():
  return Value(choice=tf.constant([1]), clicked=tf.constant([0.0]),
               engagement=tf.constant([0.0]))


def test_satiation_grows_with_exposure_and_spills_over_within_group():
  user = make_user()  # rate 0.2, decay 0.8, spillover 0.3
  after = user.next_state(state(), no_click(), slate_of(FOOTBALL)).get(
      "satiation").numpy()[0]
  assert after[FOOTBALL] == pytest.approx(0.2)
  # basketball is in football's group (sports): 0.2 * 0.3.
  assert after[BASKETBALL] == pytest.approx(0.06)
  assert after[JAZZ] == 0.0


def test_satiation_decays_without_exposure():
  user = make_user()
  start = np.zeros((1, C))
  start[0, JAZZ] = 0.5
  after = user.next_state(state(satiation=start), no_click(),
                          slate_of(FOOTBALL)).get("satiation").numpy()[0]
  assert after[JAZZ] == pytest.approx(0.8 * 0.5)


def test_repeated_exposure_converges_to_fixed_point():
  user = make_user()
  current = state()
  for _ in range(100):
    current = user.next_state(current, no_click(), slate_of(FOOTBALL))
  # s* = rate / (1 - decay + rate * decay) = 0.2 / 0.36
  assert current.get("satiation").numpy()[0, FOOTBALL] == pytest.approx(
      0.2 / 0.36, rel=1e-4)


def test_interests_move_toward_consumed_item_only_on_click():
  user = make_user(interest_step=0.1)
  interest = np.zeros((1, C))
  interest[0, JAZZ] = 1.0
  clicked = Value(choice=tf.constant([0]), clicked=tf.constant([1.0]),
                  engagement=tf.constant([0.5]))
  moved = user.next_state(state(interest=interest), clicked,
                          slate_of(FOOTBALL)).get("interest").numpy()[0]
  expected = interest[0] + 0.1 * (np.eye(C)[FOOTBALL] - interest[0])
  np.testing.assert_allclose(moved, expected, atol=1e-6)
  unmoved = user.next_state(state(interest=interest), no_click(),
                            slate_of(FOOTBALL)).get("interest").numpy()[0]
  np.testing.assert_allclose(unmoved, interest[0], atol=1e-6)


def test_engagement_and_click_probability_follow_their_formulas():
  n = 20000
  user = make_user(num_users=n)
  interest = np.zeros((n, C), np.float32)
  interest[:, FOOTBALL] = 0.5
  satiation = np.zeros((n, C), np.float32)
  satiation[:, FOOTBALL] = 0.4
  current = Value(interest=tf.constant(interest), satiation=tf.constant(satiation))
  with seeding.stateless_sampling(tf.constant([1, 2])):
    response = user.next_response(current, slate_of(FOOTBALL, n, quality=0.1))
  # logit = 3 * (0.5 - 1.0 * 0.4) = 0.3 against a no-click logit of 0.
  p_click = 1 / (1 + np.exp(-0.3))
  clicked = response.get("clicked").numpy()
  tolerance = 4 * np.sqrt(p_click * (1 - p_click) / n)
  assert abs(clicked.mean() - p_click) < tolerance
  expected = (1 - 0.5 * 0.4) / (1 + np.exp(-2 * (0.5 + 0.1)))
  engagement = response.get("engagement").numpy()
  np.testing.assert_allclose(engagement[clicked == 1], expected, rtol=1e-5)
  assert np.all(engagement[clicked == 0] == 0.0)


def test_initial_interests_share_group_structure():
  n = 4000
  user = make_user(num_users=n)
  with seeding.stateless_sampling(tf.constant([3, 4])):
    interest = user.initial_state().get("interest").numpy()
  same = np.corrcoef(interest[:, FOOTBALL], interest[:, BASKETBALL])[0, 1]
  other = np.corrcoef(interest[:, FOOTBALL], interest[:, JAZZ])[0, 1]
  # Same-group categories share a group-level interest; others do not.
  assert same > 0.5
  assert abs(other) < 0.15


def test_interest_pool_users_are_drawn_from_the_pool():
  pool = np.stack([np.eye(C)[FOOTBALL], -np.eye(C)[JAZZ]]).astype(np.float32)
  config = {"num_users": 2000, "num_topics": C, "slate_size": 1}
  user = user_lib.SatiationUser(config, CATALOGUE, user_lib.UserParams(), pool)
  with seeding.stateless_sampling(tf.constant([5, 6])):
    interest = user.initial_state().get("interest").numpy()
  first = np.all(interest == pool[0], axis=1)
  second = np.all(interest == pool[1], axis=1)
  assert np.all(first | second)
  assert abs(first.mean() - 0.5) < 4 * np.sqrt(0.25 / 2000)
  with pytest.raises(ValueError, match=r"interest_pool has shape \(2, 3\)"):
    user_lib.SatiationUser(config, CATALOGUE, user_lib.UserParams(), pool[:, :3])
