"""Masked double DQN: the low level of `lerl` and the flat `dqn` baseline.

The mask reaches the agent through `observation_and_action_constraint_splitter`,
so both the greedy/epsilon-greedy action and the TD target's max over the
next state only consider allowed items.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import gin
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.environments import py_environment
from tf_agents.specs import tensor_spec
from tf_agents.utils import common

from lerl_recsim import environment as environment_lib
from lerl_recsim.agents import (learners, networks, run_config, runner,
                                slate_policy)
from lerl_recsim.agents.draws import Draws


def make_agent(env: py_environment.PyEnvironment, *,
               fc_layer_params: Sequence[int], learning_rate: float,
               gamma: float, epsilon_greedy: float, target_update_period: int,
               n_step: int) -> dqn_agent.DdqnAgent:
  """A double DQN over item Q-values for a planned or flat environment.

  With slates (k > 1) the agent itself acts on single items; `learner`
  wraps it in top-k slate policies (see `slate_policy`).
  """
  inputs = networks.agent_inputs(env, "DQN", slates_supported=True)
  action_spec = inputs.action_spec
  if action_spec.shape.rank:
    action_spec = slate_policy.item_spec(action_spec)
  q_net = networks.item_q_network(inputs.time_step_spec.observation,
                                  action_spec, inputs.item_categories,
                                  inputs.encoder, fc_layer_params)
  agent = dqn_agent.DdqnAgent(
      inputs.time_step_spec, action_spec, q_network=q_net,
      optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
      observation_and_action_constraint_splitter=environment_lib.splitter,
      epsilon_greedy=epsilon_greedy, gamma=gamma,
      target_update_period=target_update_period, n_step_update=n_step,
      td_errors_loss_fn=common.element_wise_huber_loss,
      train_step_counter=tf.Variable(0, dtype=tf.int64, name="train_step"))
  agent.initialize()
  return agent


def learner(agent: dqn_agent.DqnAgent, env: py_environment.PyEnvironment, *,
            epsilon_greedy: float, n_step: int, **options: Any
            ) -> learners.OffPolicyLearner:
  """The replay learner (sequences of n_step + 1 steps), collecting with
  masked epsilon-greedy items, or top-k slates (`slate_policy`), whose
  draws a checkpoint holds."""
  draws = Draws()
  action_spec = tensor_spec.from_spec(env.action_spec())
  time_step_spec = tensor_spec.from_spec(env.time_step_spec())

  def top_k(epsilon: float) -> slate_policy.TopKQPolicy:
    return slate_policy.TopKQPolicy(time_step_spec, action_spec,
                                    agent._q_network, environment_lib.splitter,
                                    epsilon, draws)

  # One item: the agent's own greedy policy is evaluated and exported.
  slates = ({} if action_spec.shape.rank == 0 else
            {"greedy_policy": top_k(0.0),
             "recorded_action": slate_policy.leading_item})
  return learners.OffPolicyLearner(
      agent, env, sequence_length=n_step + 1, draws=draws,
      collect_policy=top_k(epsilon_greedy), **slates, **options)


# gin: `dqn.train_eval.<hyper-parameter> = value` (see configs/).
@gin.configurable(module="dqn", denylist=["run", "root_dir"])
def train_eval(run: run_config.RunConfig, root_dir: str, *,
               fc_layer_params: Sequence[int] = (256, 128),
               learning_rate: float = 3e-4,
               gamma: float = 0.9,
               epsilon_greedy: float = 0.1,
               target_update_period: int = 100,
               n_step: int = 1,
               replay_capacity: int = 100_000,
               batch_size: int = 256,
               collect_steps_per_iteration: int = 4,
               train_steps_per_iteration: int = 1,
               initial_collect_steps: int = 10) -> dict[str, Any]:
  """Trains and evaluates a masked double DQN (`lerl`, `dqn`, `heuristic_dqn`).

  Args:
    run: run-level settings (agent, scenario, planner, sizes, seed).
    root_dir: the run directory.
    fc_layer_params: hidden layers of the Q-network after the encoder.
    learning_rate: Adam step size.
    gamma: discount of future engagement (LERL's authors used 0.9).
    epsilon_greedy: exploration rate of the collect policy.
    target_update_period: gradient steps between target-network copies.
    n_step: steps of observed reward in each TD target before bootstrapping.
    replay_capacity: transitions kept in the replay buffer.
    batch_size: transitions per gradient step.
    collect_steps_per_iteration: environment steps (of all users) per
      iteration.
    train_steps_per_iteration: gradient steps per iteration.
    initial_collect_steps: environment steps before the first gradient step.
  """
  hyperparameters = dict(
      fc_layer_params=list(fc_layer_params), learning_rate=learning_rate,
      gamma=gamma, epsilon_greedy=epsilon_greedy,
      target_update_period=target_update_period, n_step=n_step,
      replay_capacity=replay_capacity, batch_size=batch_size,
      collect_steps_per_iteration=collect_steps_per_iteration,
      train_steps_per_iteration=train_steps_per_iteration,
      initial_collect_steps=initial_collect_steps)

  def make_learner(env):
    return build_learner(env, **hyperparameters)

  return runner.train_and_evaluate(run, root_dir, make_learner, hyperparameters)


def default_hyperparameters() -> dict[str, Any]:
  """`train_eval`'s keyword defaults: what lerl-train uses unless told."""
  return {name: parameter.default for name, parameter in
          inspect.signature(train_eval).parameters.items()
          if parameter.kind is inspect.Parameter.KEYWORD_ONLY}


def build_learner(env: py_environment.PyEnvironment, *,
                  fc_layer_params: Sequence[int], learning_rate: float,
                  gamma: float, epsilon_greedy: float,
                  target_update_period: int, n_step: int,
                  replay_capacity: int,
                  batch_size: int, collect_steps_per_iteration: int,
                  train_steps_per_iteration: int,
                  initial_collect_steps: int) -> learners.OffPolicyLearner:
  """The agent and its replay learner from `train_eval`'s hyper-parameters
  (also what the benchmarks train)."""
  agent = make_agent(env, fc_layer_params=fc_layer_params,
                     learning_rate=learning_rate, gamma=gamma,
                     epsilon_greedy=epsilon_greedy,
                     target_update_period=target_update_period,
                     n_step=n_step)
  return learner(agent, env, epsilon_greedy=epsilon_greedy, n_step=n_step,
                 replay_capacity=replay_capacity, batch_size=batch_size,
                 collect_steps=collect_steps_per_iteration,
                 train_steps=train_steps_per_iteration,
                 initial_collect_steps=initial_collect_steps)
