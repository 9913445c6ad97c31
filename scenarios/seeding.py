"""Reproducible randomness for RecSim NG stories.

RecSim NG entities draw their randomness through edward2 random variables,
which sample from TensorFlow's stateful global generator; trajectories then
depend on whatever else the process did before. Inside `stateless_sampling`,
every random variable is instead sampled with a stateless seed derived from
one seed tensor and its order of creation, so a step is a pure function of
(state, action, seed).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import edward2 as ed
import tensorflow as tf


@contextlib.contextmanager
def stateless_sampling(seed: tf.Tensor) -> Iterator[None]:
  """Samples each edward2 random variable created here from `seed`.

  Args:
    seed: int32 or int64 tensor of shape [2], a TF stateless seed.
  """
  seed = tf.cast(seed, tf.int64)
  counter = iter(range(1 << 30))

  def tracer(constructor: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if kwargs.get("value") is not None:
      return ed.traceable(constructor)(*args, **kwargs)
    variable = constructor(*args, **kwargs)
    op_seed = tf.random.experimental.stateless_fold_in(seed, next(counter))
    kwargs["value"] = variable.distribution.sample(
        variable.sample_shape, seed=op_seed)
    return ed.traceable(constructor)(*args, **kwargs)

  with ed.trace(tracer):
    yield
