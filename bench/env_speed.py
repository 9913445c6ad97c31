"""Environment stepping speed against RecSim NG's own interest-evolution app.

Prints user-steps/s for:
  * lerl_recsim's `interest_evolution` environment through the full TF-Agents
    PyEnvironment contract (numpy actions in, TimeStep out, random actions);
  * RecSim NG's `recsys_partially_observable_rl` application (same users and
    documents, 20 topics), stepped one compiled step at a time from Python —
    with its network value passed in and out of the tf.function, and with the
    value kept in tf.Variables (the way our environment does it) — and run
    through its own `TFRuntime.execute` loop;
and the ratio of ours to the faster of RecSim NG's step-at-a-time variants.

Run: python bench/env_speed.py [--num_users=256] [--num_items=1000]
"""

from __future__ import annotations

import time

from absl import app, flags

import lerl_recsim  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
import numpy as np
import tensorflow as tf
from recsim_ng.applications.recsys_partially_observable_rl import (
    simulation_config)
from recsim_ng.core import network as network_lib, value
from recsim_ng.lib.tensorflow import runtime

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_users", 256, "Simultaneous users.")
flags.DEFINE_integer("num_items", 1000, "Catalogue size.")
flags.DEFINE_integer("steps", 300, "Timed steps per measurement.")
flags.DEFINE_integer("repeats", 3, "Measurements per variant; the best is kept.")


def best_rate(step, num_users: int, steps: int, repeats: int) -> float:
  for _ in range(5):
    step()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    rates.append(num_users * steps / (time.perf_counter() - start))
  return max(rates)


def ours(num_users: int, num_items: int) -> callable:
  env = lerl_recsim.make_env(num_users=num_users, num_items=num_items, seed=0)
  env.reset()
  rng = np.random.default_rng(0)
  return lambda: env.step(rng.integers(0, num_items, num_users, dtype=np.int32))


def recsim_network(num_users: int, num_items: int) -> network_lib.Network:
  variables, _ = simulation_config.create_interest_evolution_simulation_network(
      num_users=num_users, num_topics=20, num_docs=num_items)
  return network_lib.Network(variables=variables)


def recsim_packed(network: network_lib.Network) -> callable:
  pack = lambda nv: {n: dict(v.as_dict) for n, v in nv.items()}
  step_fn = tf.function(
      lambda packed: pack(network.step(
          {n: value.Value(**f) for n, f in packed.items()})))
  state = [pack(network.initial_step())]

  def step():
    state[0] = step_fn(state[0])
  return step


def recsim_variables(network: network_lib.Network) -> callable:
  initial = {n: dict(v.as_dict) for n, v in network.initial_step().items()}
  state = tf.nest.map_structure(tf.Variable, initial)

  @tf.function
  def step_fn():
    previous = {n: value.Value(**{k: v.read_value() for k, v in f.items()})
                for n, f in state.items()}
    new = network.step(previous)
    tf.nest.map_structure(lambda var, t: var.assign(t), state,
                          {n: dict(v.as_dict) for n, v in new.items()})
  return step_fn


def main(argv: list[str]) -> None:
  del argv
  u, n, steps, repeats = (FLAGS.num_users, FLAGS.num_items, FLAGS.steps,
                          FLAGS.repeats)
  ours_rate = best_rate(ours(u, n), u, steps, repeats)
  network = recsim_network(u, n)
  packed_rate = best_rate(recsim_packed(network), u, steps, repeats)
  variables_rate = best_rate(recsim_variables(network), u, steps, repeats)
  tf_runtime = runtime.TFRuntime(network=network)
  chunk = 50
  start = time.perf_counter()
  tf_runtime.execute(num_steps=chunk)  # compile
  start = time.perf_counter()
  tf_runtime.execute(num_steps=steps)
  execute_rate = u * steps / (time.perf_counter() - start)
  reference = max(packed_rate, variables_rate)
  print(f"users={u} items={n} (best of {repeats} x {steps} steps)")
  print(f"lerl_recsim interest_evolution, PyEnvironment.step: {ours_rate:10.0f} user-steps/s")
  print(f"RecSim NG app, compiled step, value in/out:        {packed_rate:10.0f} user-steps/s")
  print(f"RecSim NG app, compiled step, value in variables:  {variables_rate:10.0f} user-steps/s")
  print(f"RecSim NG app, TFRuntime.execute({steps}):           {execute_rate:10.0f} user-steps/s")
  print(f"ratio ours / RecSim NG step-at-a-time (best):      {ours_rate / reference:10.2f}")
  print(f"target >= 50000 user-steps/s: {'met' if ours_rate >= 50000 else 'NOT met'}; "
        f"ratio >= 1.0: {'met' if ours_rate >= reference else 'NOT met'}")


if __name__ == "__main__":
  app.run(main)
