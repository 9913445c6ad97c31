r"""Trains `SoftmaxRecommender` inside the scenario with RecSim NG's runtime.

  python -m lerl_recsim.scenarios.examples.train_softmax_recommender \
      --num_users=16 --num_items=60 --horizon=15 --iterations=10

As RecSim NG's applications do, the recommender is an entity of the story
and `runtime.TFRuntime(network).trajectory` simulates every user slot for
`horizon` steps; each iteration continues where the last one stopped, so
users finish their sessions and new ones arrive (`story.SessionNetwork`).
Then a REINFORCE step: each recommendation's log-probability, recomputed
from the observation it was made on, weighted by the discounted engagement
of the rest of that user's session within the window (minus the mean over
users at that step). Prints each iteration's objective, the mean engagement
per user-step and the sessions that ended.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import tensorflow as tf
from absl import app, flags
from recsim_ng.core import network as network_lib
from recsim_ng.core import value
from recsim_ng.lib.tensorflow import runtime

from lerl_recsim.scenarios import registry, story
from lerl_recsim.scenarios.examples import softmax_recommender

Value = value.Value


def _packed(network_value: network_lib.NetworkValue
            ) -> dict[str, dict[str, tf.Tensor]]:
  return {name: dict(v.as_dict) for name, v in network_value.items()}


def _unpacked(packed: dict[str, dict[str, tf.Tensor]]
              ) -> network_lib.NetworkValue:
  return {name: Value(**fields) for name, fields in packed.items()}


def _setting(default: int | float | str, help_text: str) -> dataclasses.Field:
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Settings:
  """Training settings, each the default of a flag of the same name."""

  num_users: int = _setting(32, "User slots simulated together.")
  num_items: int = _setting(100, "Catalogue size.")
  exit_rule: str = _setting("satisfaction", "The scenario's exit rule.")
  horizon: int = _setting(20, "Steps simulated per iteration.")
  iterations: int = _setting(20, "REINFORCE steps.")
  learning_rate: float = _setting(0.05, "Adam's step size.")
  discount: float = _setting(
      0.9, "Weight of each later step's engagement in a return.")
  seed: int = _setting(0, "The scenario's seed (catalogue and every draw).")


@dataclasses.dataclass(frozen=True)
class IterationMetrics:
  """One iteration's results: the REINFORCE objective, the engagement per
  user-step simulated and the sessions that ended."""

  objective: float
  mean_engagement: float
  sessions_ended: int


def returns(rewards: tf.Tensor, ended: tf.Tensor,
            discount: float) -> tf.Tensor:
  """float32 [T, U]: at step t, the discounted engagement of steps t + 1 ..
  T of the same session (`rewards` and `ended` [T + 1, U], step 0 first)."""
  following = tf.zeros_like(rewards[0])
  later = []
  for t in reversed(range(rewards.shape[0] - 1)):
    continuing = 1.0 - tf.cast(ended[t + 1], tf.float32)
    following = rewards[t + 1] + discount * continuing * following
    later.append(following)
  return tf.stack(later[::-1])


class Trainer:
  """The recommender, its network and runtime, and the REINFORCE step."""

  def __init__(self, settings: Settings = Settings()):
    self.settings = settings
    scenario = registry.build_scenario(
        "interest_evolution", num_users=settings.num_users,
        seed=settings.seed, num_items=settings.num_items,
        exit_rule=settings.exit_rule)
    self.recommender = softmax_recommender.SoftmaxRecommender(
        scenario.entities.config)
    self.network = scenario.recommender_network(self.recommender)
    # As RecSim NG's applications do: an uncompiled runtime inside a
    # function compiled here, whose argument (a nest of tensors, unlike a
    # network value) is traced once.
    tf_runtime = runtime.TFRuntime(self.network, graph_compile=False)
    self._simulate = tf.function(lambda start: _packed(tf_runtime.trajectory(
        length=settings.horizon + 1, starting_value=_unpacked(start))))
    # The corpus is static: every step offers these docs.
    self._available_docs = scenario.entities.corpus.available_documents(
        scenario.entities.corpus.initial_state())
    self._optimizer = tf.keras.optimizers.Adam(settings.learning_rate)
    self._start = _packed(self.network.initial_step())

  def iteration(self) -> IterationMetrics:
    """Simulates `horizon` more steps, then takes one REINFORCE step."""
    trajectory = _unpacked(self._simulate(self._start))
    self._start = _packed({name: v.map(lambda field: field[-1])
                           for name, v in trajectory.items()})
    rewards = trajectory[story.USER_RESPONSE].get("engagement")
    ended = story.ended(trajectory[story.EXIT_STATE])
    # The slate decided at step t is shown at t + 1 unless the session
    # ended at t (a new user then arrives and that slate is dropped).
    shown = tf.cast(~ended[:-1], tf.float32)
    advantage = returns(rewards, ended, self.settings.discount)
    advantage -= (tf.reduce_sum(advantage * shown, axis=1, keepdims=True) /
                  tf.maximum(tf.reduce_sum(shown, axis=1, keepdims=True), 1.0))
    observations = story.observation(trajectory[story.HISTORY]).map(
        lambda field: tf.reshape(field[:-1], [-1, *field.shape[2:]]))
    items = tf.reshape(
        trajectory[story.SLATE_DOCS].get("item_id")[:-1, :, 0], [-1])
    weights = tf.reshape(advantage * shown, [-1])
    with tf.GradientTape() as tape:
      log_probs = tf.gather(
          tf.nn.log_softmax(self.recommender.logits(
              observations, self._available_docs)),
          items, batch_dims=1)
      objective = -tf.reduce_sum(log_probs * weights) / tf.maximum(
          tf.reduce_sum(shown), 1.0)
    variables = self.recommender.trainable_variables
    self._optimizer.apply_gradients(
        zip(tape.gradient(objective, variables), variables))
    return IterationMetrics(
        objective=float(objective),
        mean_engagement=float(tf.reduce_mean(rewards[1:])),
        sessions_ended=int(tf.reduce_sum(tf.cast(ended[1:], tf.int32))))


def define_flags() -> None:
  """One flag per `Settings` field, with its default and help."""
  define = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
            str: flags.DEFINE_string}
  for field in dataclasses.fields(Settings):
    define[type(field.default)](field.name, field.default,
                                field.metadata["help"])


def main(argv: Sequence[str]) -> None:
  del argv
  trainer = Trainer(Settings(**{field.name: flags.FLAGS[field.name].value
                                for field in dataclasses.fields(Settings)}))
  for iteration in range(trainer.settings.iterations):
    metrics = trainer.iteration()
    print(f"iteration {iteration + 1}: objective {metrics.objective:+.4f}, "
          f"engagement per user-step {metrics.mean_engagement:.3f}, "
          f"sessions ended {metrics.sessions_ended}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
