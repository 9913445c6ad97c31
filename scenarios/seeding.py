"""Reproducible randomness for RecSim NG stories.

RecSim NG entities draw their randomness through edward2 random variables,
which sample from TensorFlow's stateful global generator; trajectories then
depend on whatever else the process did before. Inside `stateless_sampling`,
every random variable is instead sampled with a stateless seed derived from
one seed tensor and its order of creation, so a step is a pure function of
(state, action, seed).

`separate_stream` gives a part of a step (a recommender inside the story) a
stream of its own, so that what it draws never shifts the users' draws.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterator

import edward2 as ed
import tensorflow as tf

# Data folded into a seed: draws count up from 0, separate streams from here.
_FIRST_STREAM = 1 << 30
# The seed and stream counter of each open `stateless_sampling`, innermost
# last (a Python stack: it lives while a step is traced or run eagerly).
_OPEN: list[tuple[tf.Tensor, Iterator[int]]] = []


@contextlib.contextmanager
def stateless_sampling(seed: tf.Tensor) -> Iterator[None]:
  """Samples each edward2 random variable created here from `seed`.

  Args:
    seed: int32 or int64 tensor of shape [2], a TF stateless seed.
  """
  seed = tf.cast(seed, tf.int64)
  counter = iter(range(_FIRST_STREAM))

  def tracer(constructor: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if kwargs.get("value") is not None:
      return ed.traceable(constructor)(*args, **kwargs)
    variable = constructor(*args, **kwargs)
    op_seed = tf.random.experimental.stateless_fold_in(seed, next(counter))
    kwargs["value"] = variable.distribution.sample(
        variable.sample_shape, seed=op_seed)
    return ed.traceable(constructor)(*args, **kwargs)

  _OPEN.append((seed, itertools.count(_FIRST_STREAM)))
  try:
    with ed.trace(tracer):
      yield
  finally:
    _OPEN.pop()


@contextlib.contextmanager
def separate_stream() -> Iterator[None]:
  """Samples the random variables created here from a stream of their own.

  Inside `stateless_sampling(seed)`, the k-th separate stream is seeded by
  `seed` folded with a number no draw uses, and the enclosing draws keep
  their numbering; a draw whose value a stream sets is not counted outside
  it. Outside `stateless_sampling` this does nothing.
  """
  if not _OPEN:
    yield
    return
  seed, streams = _OPEN[-1]
  with stateless_sampling(
      tf.random.experimental.stateless_fold_in(seed, next(streams))):
    yield
