"""The greedy policy as a SavedModel that plain TensorFlow can load and serve.

TF-Agents' `PolicySaver` writes the `action` signature (a whole time step
in, a policy step out) that `SavedModelPyTFEagerPolicy` and lerl_recsim's
serving read. Two additions make the same SavedModel a serving artefact:

- `serving_default`: the observation's fields and the mask in, the chosen
  item(s) out (`item`), each input named after its field, so
  `saved_model_cli run --signature_def serving_default` and TF Serving's
  REST API need nothing of TF-Agents' time-step layout;
- no action distribution: a greedy policy's is a point mass, and its TFP
  TypeSpec is what stopped `tf.saved_model.load` in a process that had not
  imported TF-Agents or lerl_recsim. `saved_policy.distribution` raises.
"""

from __future__ import annotations

import pathlib
import tensorflow as tf
from tf_agents.policies import policy_saver, tf_policy
from tf_agents.trajectories import time_step as ts

ITEM_OUTPUT = "item"


class _ActionOnlyPolicy(tf_policy.TFPolicy):
  """`policy` without its distribution: PolicySaver then saves no TFP type."""

  def __init__(self, policy: tf_policy.TFPolicy):
    super().__init__(policy.time_step_spec, policy.action_spec,
                     policy.policy_state_spec, policy.info_spec,
                     name=policy.name + "_action_only")
    self._policy = policy

  def _variables(self) -> list[tf.Variable]:
    return self._policy.variables()

  def _action(self, time_step, policy_state, seed=None):
    return self._policy.action(time_step, policy_state, seed)

  def _distribution(self, time_step, policy_state):
    raise NotImplementedError(
        "the exported greedy policy has no distribution; use action()")


def serving_inputs(time_step_spec: ts.TimeStep) -> dict[str, tf.TensorSpec]:
  """The serving signature's inputs: each observation field and the mask,
  batched, named after themselves."""
  observation = time_step_spec.observation
  fields = dict(observation["observation"], mask=observation["mask"])
  return {name: tf.TensorSpec([None, *spec.shape], spec.dtype, name=name)
          for name, spec in fields.items()}


class ServingPolicySaver(policy_saver.PolicySaver):
  """PolicySaver with a `serving_default` signature over observation and
  mask (a stateless policy: every request is one step of a session)."""

  def __init__(self, policy: tf_policy.TFPolicy, train_step: tf.Variable):
    if policy.policy_state_spec:
      raise ValueError("serving_default needs a stateless policy; "
                       f"{policy.name} keeps state {policy.policy_state_spec}")
    policy = _ActionOnlyPolicy(policy)
    super().__init__(policy, batch_size=None, train_step=train_step)
    spec = policy.time_step_spec
    inputs = serving_inputs(spec)

    # Traced without AutoGraph, as TF-Agents traces its policies: converting
    # the policy's whole call tree took most of the export's time.
    @tf.function(input_signature=[inputs], autograph=False)
    def serve(request: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      batch = tf.shape(request["mask"])[0]
      observation = {"observation": {name: request[name] for name in
                                     spec.observation["observation"]},
                     "mask": request["mask"]}
      step = ts.TimeStep(
          step_type=tf.fill([batch], tf.constant(ts.StepType.MID,
                                                 spec.step_type.dtype)),
          reward=tf.zeros([batch], spec.reward.dtype),
          discount=tf.ones([batch], spec.discount.dtype),
          observation=observation)
      return {ITEM_OUTPUT: policy.action(step).action}

    # The subclass's one addition to the signatures PolicySaver writes.
    self._signatures["serving_default"] = serve.get_concrete_function()


def export_policy(policy: tf_policy.TFPolicy, train_step: tf.Variable,
                  policy_dir: pathlib.Path) -> None:
  """Writes `policy` (greedy, stateless) to `policy_dir` as a SavedModel."""
  ServingPolicySaver(policy, train_step).save(str(policy_dir))

