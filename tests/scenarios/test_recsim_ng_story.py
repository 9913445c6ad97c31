"""The story with a recommender inside, run by RecSim NG's runtime, against
the TF-Agents environment; and the example that trains such a recommender."""

import math

import numpy as np
import pytest
import tensorflow as tf
from recsim_ng.core import value
from recsim_ng.entities.recommendation import recommender
from recsim_ng.lib.tensorflow import field_spec, runtime
from tf_agents.trajectories import time_step as ts

from lerl_recsim import environment
from lerl_recsim.scenarios import session_history, story
from lerl_recsim.scenarios.examples import softmax_recommender
from lerl_recsim.scenarios.examples import train_softmax_recommender as train

Value = value.Value
ValueSpec = value.ValueSpec
STEPS = 12


def cycling_slates(steps: tf.Tensor, num_items: int,
                   slate_size: int) -> tf.Tensor:
  """int32 [U, k]: slot u's slate at its session's step s is items
  7s + 3u + j * N/k (mod N), j < k: a fixed schedule."""
  steps = tf.convert_to_tensor(steps, tf.int32)[:, None]
  slots = tf.range(tf.shape(steps)[0])[:, None]
  offsets = (num_items // slate_size) * tf.range(slate_size)[None]
  return (7 * steps + 3 * slots + offsets) % num_items


class CyclingRecommender(recommender.BaseRecommender):
  """Recommends `cycling_slates`, counting its users' steps in its state."""

  def initial_state(self) -> Value:
    return Value(steps=tf.zeros([self._num_users], tf.int32))

  def next_state(self, previous_state: Value, user_response: Value,
                 slate_docs: Value) -> Value:
    del user_response, slate_docs
    return Value(steps=previous_state.get("steps") + 1)

  def slate_docs(self, previous_state: Value, user_obs: Value,
                 available_docs: Value) -> Value:
    del user_obs
    items = cycling_slates(previous_state.get("steps"), self._num_docs,
                           self._slate_size)
    return available_docs.map(lambda field: tf.gather(field, items))

  def specs(self) -> ValueSpec:
    slate = ValueSpec(**{name: field_spec.FieldSpec()
                         for name in softmax_recommender.DOC_FIELDS})
    return ValueSpec(steps=field_spec.FieldSpec()).prefixed_with(
        "state").union(slate.prefixed_with("slate"))


def scenario_for(seed: int, **overrides):
  return environment.build_scenario("interest_evolution", num_users=4,
                                    seed=seed, num_items=20, **overrides)


def story_trajectory(scenario, recommender_entity) -> dict[str, Value]:
  network = scenario.recommender_network(recommender_entity)
  return runtime.TFRuntime(network).trajectory(length=STEPS + 1)


def environment_steps(scenario, slates_for) -> list[ts.TimeStep]:
  """The environment's reset and STEPS steps, the action at each step given
  by `slates_for(t, previous time step)`."""
  env = environment.RecSimEnvironment(scenario, seed=scenario.config["seed"])
  steps = [env.reset()]
  for t in range(1, STEPS + 1):
    slates = slates_for(t, steps[-1])
    steps.append(env.step(slates if scenario.slate_size > 1 else slates[:, 0]))
  return steps


def assert_same(trajectory: dict[str, Value],
                steps: list[ts.TimeStep]) -> None:
  """Every step: engagement = reward, ended = LAST, arrival = FIRST, left =
  1 - discount, and the observed history, all identical."""
  engagement = trajectory[story.USER_RESPONSE].get("engagement").numpy()
  exit_state = trajectory[story.EXIT_STATE]
  ended = story.ended(exit_state).numpy()
  history = trajectory[story.HISTORY]
  for t, step in enumerate(steps):
    expected_type = np.where(
        ended[t], ts.StepType.LAST,
        np.where(t == 0 or ended[t - 1], ts.StepType.FIRST, ts.StepType.MID))
    np.testing.assert_array_equal(step.step_type, expected_type, f"step {t}")
    np.testing.assert_array_equal(step.reward, engagement[t], f"step {t}")
    np.testing.assert_array_equal(
        step.discount, 1.0 - exit_state.get("left").numpy()[t], f"step {t}")
    for name in session_history.OBSERVED_FIELDS:
      np.testing.assert_array_equal(
          step.observation["observation"][name], history.get(name).numpy()[t],
          f"{name} at step {t}")


def test_runtime_story_matches_environment_with_departures():
  # Temper 4, one point per step, one more when a slate position repeats
  # its category (the cycling schedule never does): every session ends at
  # its 4th step, a new user arrives at the next.
  scenario = scenario_for(seed=5, slate_size=2, exit_rule="temper",
                          exit_params={"initial_temper": 4})
  trajectory = story_trajectory(
      scenario, CyclingRecommender(scenario.entities.config))
  steps = environment_steps(scenario, lambda t, previous: cycling_slates(
      previous.observation["observation"]["session_length"], 20, 2).numpy())
  assert_same(trajectory, steps)
  step_types = np.stack([step.step_type for step in steps])
  np.testing.assert_array_equal(step_types[:, 0], [0, 1, 1, 1, 2, 0, 1, 1, 1,
                                                   2, 0, 1, 1])
  assert (step_types == step_types[:, :1]).all()
  # The environment was given the slates the story's recommender showed.
  shown = trajectory[story.SLATE_DOCS].get("item_id").numpy()
  for t in range(1, STEPS + 1):
    active = steps[t - 1].step_type != ts.StepType.LAST
    np.testing.assert_array_equal(
        shown[t - 1][active], cycling_slates(
            steps[t - 1].observation["observation"]["session_length"],
            20, 2).numpy()[active])


def test_runtime_story_matches_environment_when_responses_decide_exits():
  # KuaiSim's temper falls by 2 minus the engagement each step: when each
  # user leaves depends on the draws of their responses.
  overrides = {"exit_rule": "kuaisim", "exit_params": {"initial_temper": 6}}
  scenario = scenario_for(seed=2, **overrides)
  trajectory = story_trajectory(
      scenario, CyclingRecommender(scenario.entities.config))
  steps = environment_steps(scenario, lambda t, previous: cycling_slates(
      previous.observation["observation"]["session_length"], 20, 1).numpy())
  assert_same(trajectory, steps)
  step_types = np.stack([step.step_type for step in steps])
  assert (step_types == ts.StepType.LAST).sum() >= 4
  assert (step_types != step_types[:, :1]).any()  # slots part ways
  # The draws come from the seed: another seed gives other responses.
  other = story_trajectory(scenario_for(seed=3, **overrides),
                           CyclingRecommender(scenario.entities.config))
  assert not np.array_equal(
      other[story.USER_RESPONSE].get("choice").numpy(),
      trajectory[story.USER_RESPONSE].get("choice").numpy())


def test_a_drawing_recommender_leaves_the_users_draws_alone():
  # The softmax recommender draws its items from its own stream: replaying
  # its slates in the environment gives the same users and responses.
  scenario = scenario_for(seed=7, exit_rule="temper",
                          exit_params={"initial_temper": 5})
  drawing = softmax_recommender.SoftmaxRecommender(scenario.entities.config)
  drawing.trainable_variables[0].assign(tf.random.stateless_normal(
      drawing.trainable_variables[0].shape, seed=[1, 2], stddev=3.0))
  trajectory = story_trajectory(scenario, drawing)
  shown = trajectory[story.SLATE_DOCS].get("item_id").numpy()
  assert len(np.unique(shown)) > 3
  assert_same(trajectory, environment_steps(
      scenario, lambda t, previous: shown[t - 1]))


def test_example_trains_the_recommender():
  trainer = train.Trainer(train.Settings(num_users=8, num_items=40,
                                         horizon=8))
  weights = trainer.recommender.trainable_variables
  assert [w.name for w in weights] == ["weights:0"]
  before = weights[0].numpy().copy()
  assert not before.any()  # a uniform policy to start from
  metrics = [trainer.iteration() for _ in range(3)]
  for m in metrics:
    assert math.isfinite(m.objective) and math.isfinite(m.mean_engagement)
    assert 0.0 < m.mean_engagement < 1.0
  assert np.abs(weights[0].numpy() - before).max() > 1e-3
  assert sum(m.sessions_ended for m in metrics) > 0


def test_example_recommends_one_item():
  scenario = scenario_for(seed=0, slate_size=2)
  with pytest.raises(ValueError, match="slate_size=2"):
    softmax_recommender.SoftmaxRecommender(scenario.entities.config)
