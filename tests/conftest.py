"""Shared test setup: the package first (Keras 2), quiet TensorFlow, and
the constants and test doubles several test modules share
(`from tests.conftest import ...`)."""

import json
import os
import pathlib
import sys
import zlib
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One BLAS thread per test process (set before NumPy loads OpenBLAS):
# `make test` runs a process per core, and the MovieLens calibration's many
# small solves took 17 times as long when two processes' BLAS threads
# waited on each other's cores (99.7 s against 5.9 s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import lerl_recsim  # noqa: E402  (before any test module imports tf_agents)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.language_models.fake_chat_models import (  # noqa: E402
    FakeListChatModel)
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from tf_agents.environments import tf_environment as tf_env_lib  # noqa: E402
from tf_agents.policies import tf_policy  # noqa: E402
from tf_agents.replay_buffers import tf_uniform_replay_buffer  # noqa: E402
from tf_agents.specs import tensor_spec  # noqa: E402
from tf_agents.trajectories import policy_step  # noqa: E402

from lerl_recsim.agents import learners  # noqa: E402
from lerl_recsim.experiments import run_config, runner, sweep  # noqa: E402
from lerl_recsim.planner import PlanRules, answers, backends  # noqa: E402
from lerl_recsim.scenarios.catalogue import default_catalogue  # noqa: E402

# Runs in this process train with their default threads per op, which
# TensorFlow fixes when it runs its first op.
runner.use_intra_op_threads(run_config.RunConfig.intra_op_threads)

# Plans of 2-4 categories, the rules before plans grew to 7-9: tests whose
# point is a mechanism (validation, caching, fallback, background answers,
# reflections) keep hand-written fake replies of a few categories readable by
# giving the planner these rules explicitly. Tests of the product defaults
# use PlanRules().
SMALL_PLANS = PlanRules(min_categories=2, max_categories=4)

# The checkout's root (configs/, requirements/ and ../shared/ are read from
# it); tests sit in folders that mirror the code's.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


class BackOffClock:
  """The planner's back-off clock, moved only by the test (`sleep`): a busy
  machine cannot make a back-off expire between two of a test's steps."""

  def __init__(self) -> None:
    self.now = 1000.0

  def monotonic(self) -> float:
    return self.now

  def sleep(self, seconds: float) -> None:
    self.now += seconds


@pytest.fixture(name="backoff_clock")
def backoff_clock_fixture(monkeypatch) -> BackOffClock:
  """Replaces the clock of the planner's back-off with a `BackOffClock`."""
  clock = BackOffClock()
  monkeypatch.setattr(answers, "time", clock)
  return clock


# The scenario of the tests that compare the Python and graph paths: a small
# catalogue and DORL's exit rule, so that sessions end within a few steps.
SCENARIO = dict(num_items=60, exit_rule="category_window",
                exit_params={"preset": "dorl"})


class HashPolicy(tf_policy.TFPolicy):
  """Deterministic but varied: the allowed item with the largest
  sin(item · (1 + session length + slot)), so both paths act alike."""

  def __init__(self, time_step_spec, action_spec):
    super().__init__(time_step_spec, action_spec,
                     observation_and_action_constraint_splitter=lerl_recsim.splitter)

  def _distribution(self, time_step, policy_state):
    raise NotImplementedError

  def _action(self, time_step, policy_state, seed=None):
    observation, mask = lerl_recsim.splitter(time_step.observation)
    items = tf.cast(tf.range(tf.shape(mask)[1]), tf.float32)[None, :]
    phase = (1.0 + tf.cast(observation["session_length"], tf.float32)
             + tf.cast(tf.range(tf.shape(mask)[0]), tf.float32))[:, None]
    scores = tf.where(mask, tf.sin(items * phase * 0.37), -2.0)
    action = tf.cast(tf.argmax(scores, axis=1), tf.int32)
    return policy_step.PolicyStep(action, policy_state, ())


def collect(env, steps: int):
  """Collected trajectories (replay contents) and ended-session metrics."""
  specs = (tensor_spec.from_spec(env.time_step_spec()),
           tensor_spec.from_spec(env.action_spec()))
  policy = HashPolicy(*specs)
  buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
      policy.trajectory_spec, batch_size=env.batch_size, max_length=steps + 1)
  collector = learners.make_collector(env, policy, buffer)
  is_graph = isinstance(env, tf_env_lib.TFEnvironment)
  assert isinstance(collector, learners.GraphCollector) == is_graph
  for _ in range(steps // 5):
    collector.run(5)
  recorder = env.wrapped_env().episode_metrics if hasattr(
      env, "wrapped_env") and not isinstance(
          env, lerl_recsim.environment.RecSimEnvironment) else env.episode_metrics
  return (tf.nest.map_structure(lambda x: x.numpy(), buffer.gather_all()),
          recorder.values())


def assert_same(a, b):
  tf.nest.map_structure(np.testing.assert_array_equal, a, b)


CATEGORY_NAMES = default_catalogue().category_names


class PromptHashChatModel(BaseChatModel):
  """A fake LLM whose reply depends only on the prompt (a CRC of its text),
  so that answers do not depend on the order of concurrent calls; one reply
  in five is unreadable, to exercise fallbacks. A plan names `size`
  different categories (3 fits SMALL_PLANS; the default rules need 7-9)."""

  size: int = 3

  @property
  def _llm_type(self) -> str:
    return "prompt-hash"

  def _generate(self, messages, stop=None, run_manager=None, **kwargs):
    text = "\n".join(str(m.content) for m in messages)
    code = zlib.crc32(text.encode())
    if "Choose the categories" not in text:
      reply = f"lesson {code % 7}"
    elif code % 5 == 0:
      reply = "no idea"
    else:
      names = CATEGORY_NAMES
      order = np.random.default_rng(code).permutation(len(names))
      reply = json.dumps({"categories": [names[i]
                                         for i in order[:self.size]]})
    return ChatResult(generations=[ChatGeneration(
        message=AIMessage(content=reply))])


def killed_job(tmp_path: pathlib.Path, name: str, kills: int) -> sweep.Job:
  """A job killed by SIGKILL on its first `kills` starts (as the kernel's
  out-of-memory killer does), finishing afterwards."""
  directory = tmp_path / name
  directory.mkdir()
  script = ("import os, pathlib, signal, sys; d = pathlib.Path(sys.argv[1]); "
            "n = len(list(d.glob('start*'))); (d / f'start{n}').touch(); "
            "print('working on', d.name, flush=True); "
            f"os.kill(os.getpid(), signal.SIGKILL) if n < {kills} else "
            "(d / 'summary.json').write_text('{}')")
  return sweep.Job(name, (sys.executable, "-c", script, str(directory)),
                   directory, tmp_path / f"{name}.log")


class PhaseFake(FakeListChatModel):
  """Records each prompt with the phase of the run (`phase[0]`) it came in."""
  phase: list = []
  prompts: list = []

  def _call(self, messages: list[Any], *args: Any, **kwargs: Any) -> str:
    self.prompts.append((self.phase[0], messages[-1].content))
    return super()._call(messages, *args, **kwargs)


# A valid plan under the default rules (7-9 categories) even when one of
# its categories is saturated (with slates of one single-category item, at
# most one is).
EIGHT_CATEGORIES = ["jazz", "tennis", "cooking", "science", "politics",
                    "movies", "travel", "history"]


@pytest.fixture
def fake_backend(monkeypatch):
  """The `fake` backend's model for every planner the run builds."""
  model = PhaseFake(
      responses=[json.dumps({"categories": EIGHT_CATEGORIES})],
      phase=["training"], prompts=[])
  monkeypatch.setattr(backends, "make_chat_model", lambda backend, **_: model)
  return model
