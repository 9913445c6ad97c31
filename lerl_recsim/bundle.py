"""The serving bundle: a low-level SavedModel plus `planner_spec.json`.

The spec holds everything needed, besides the SavedModel, to turn a user's
recent history into a recommendation the way the training environment
would: the scenario facts that shape observations and masks (item
categories, history length, slate size, session cap), the catalogue the
planner chooses from, and the planner's backend, rules, prompt settings and
reflection pool. It never holds an API key or any other secret: backends
read those from the environment when they are built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import lerl_recsim
from lerl_recsim.planner import (PlanRules, PromptConfig, ReflectionPool,
                                 make_planner)
from lerl_recsim.planner.prompt import plan_prompt
from lerl_recsim.scenarios.catalogue import Catalogue

FORMAT = "lerl-recsim/serving-bundle/1"
SPEC_FILE = "planner_spec.json"
REFLECTIONS_FILE = "reflections.json"
NO_PLANNER = "none"  # the backend string for serving without a planner
POLICY_DIR = "policy"


@dataclasses.dataclass(frozen=True)
class ScenarioFacts:
  """What shapes observations and masks, read from a built scenario.

  Attributes:
    num_items: N, the policy's action range and mask size.
    history_length: H, past steps in the observation.
    slate_size: k, items per recommendation.
    max_session_length: the longest session the environment produces.
    item_categories: float32 [N, C] multi-hot categories of the items.
  """

  num_items: int
  history_length: int
  slate_size: int
  max_session_length: int
  item_categories: np.ndarray

  @classmethod
  def from_scenario(cls, scenario: Any) -> "ScenarioFacts":
    return cls(scenario.items.num_items, scenario.history_length,
               scenario.slate_size, scenario.max_session_length,
               np.asarray(scenario.items.categories, np.float32))

  @property
  def num_categories(self) -> int:
    return self.item_categories.shape[1]

  def to_json(self) -> dict[str, Any]:
    """Per-item category lists: compact, and exact for 0/1 membership."""
    values = np.unique(self.item_categories)
    if not set(values.tolist()) <= {0.0, 1.0}:
      raise ValueError(
          f"item categories hold weights {values.tolist()}; a bundle stores "
          "0/1 membership only")
    return {"num_items": self.num_items,
            "history_length": self.history_length,
            "slate_size": self.slate_size,
            "max_session_length": self.max_session_length,
            "num_categories": self.num_categories,
            "item_categories": [np.flatnonzero(row).tolist()
                                for row in self.item_categories]}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "ScenarioFacts":
    lists = data["item_categories"]
    if len(lists) != data["num_items"]:
      raise ValueError(
          f"the spec lists categories for {len(lists)} items; expected "
          f"num_items={data['num_items']}")
    matrix = np.zeros((data["num_items"], data["num_categories"]), np.float32)
    for item, categories in enumerate(lists):
      matrix[item, categories] = 1.0
    return cls(int(data["num_items"]), int(data["history_length"]),
               int(data["slate_size"]), int(data["max_session_length"]),
               matrix)


def catalogue_to_json(catalogue: Catalogue) -> dict[str, Any]:
  return {"category_names": list(catalogue.category_names),
          "group_names": list(catalogue.group_names),
          "category_group": catalogue.category_group.tolist()}


def catalogue_from_json(data: Mapping[str, Any]) -> Catalogue:
  return Catalogue(tuple(data["category_names"]), tuple(data["group_names"]),
                   np.asarray(data["category_group"]))


def prompt_template(catalogue: Catalogue, rules: PlanRules) -> dict[str, str]:
  """The planner prompt's text: the fixed system part and the user template."""
  system, human = plan_prompt(catalogue, rules).messages
  return {"system": system.content, "human": human.prompt.template}


def prompt_config_from_json(data: Mapping[str, Any]) -> PromptConfig:
  values = dict(data)
  for key in ("engagement_edges", "engagement_labels", "candidate_edges",
              "candidate_labels"):
    if key in values:
      values[key] = tuple(values[key])
  return PromptConfig(**values)


def read_spec(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """The bundle's planner spec, checked for its format."""
  path = pathlib.Path(bundle_dir) / SPEC_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f"{os.fspath(bundle_dir)!r} is not a serving bundle: {path} is "
        "missing (write one with lerl-export)")
  try:
    spec = json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON ({error})") from None
  if not isinstance(spec, dict) or spec.get("format") != FORMAT:
    raise ValueError(
        f"{path} has format {spec.get('format') if isinstance(spec, dict) else None!r}; "
        f"expected {FORMAT!r}")
  return spec


@dataclasses.dataclass(frozen=True)
class PolicySignature:
  """The input and output shapes of an exported policy."""

  observation_shapes: Mapping[str, tuple[int, ...]]
  num_items: int
  action_shape: tuple[int, ...]

  def check(self, facts: ScenarioFacts, source: str) -> None:
    """ValueError unless the policy fits observations shaped by `facts`."""
    h, k, c = facts.history_length, facts.slate_size, facts.num_categories
    expected = {"num_items": facts.num_items,
                "item_history": (h, k), "category_counts": (c,),
                "action": () if k == 1 else (k,)}
    found = {"num_items": self.num_items,
             "item_history": self.observation_shapes["item_history"],
             "category_counts": self.observation_shapes["category_counts"],
             "action": self.action_shape}
    wrong = {key: (found[key], expected[key]) for key in expected
             if found[key] != expected[key]}
    if wrong:
      details = "; ".join(f"{key} {f} where {source} needs {e}"
                          for key, (f, e) in wrong.items())
      raise ValueError(f"the policy does not match {source}: {details} "
                       "(num_items is the item count, category_counts the "
                       "category count)")


def register_tfp_types() -> None:
  """Lets `tf.saved_model.load` decode policies exported before the
  distribution was left out (`experiments/policy_export.py`).

  Their signature includes the action distribution, whose TypeSpec
  (`tfp.distributions.Deterministic_ACTTypeSpec`) TFP registers in
  `tfp.experimental`. TFP loads that module at import only when TensorFlow
  was imported first; touching it forces the load whatever the order.
  """
  dir(tfp.experimental)


def load_policy(policy_dir: str | os.PathLike[str]
                ) -> tuple[Any, PolicySignature]:
  """Loads an exported policy with clear errors for missing or corrupt ones."""
  register_tfp_types()
  path = pathlib.Path(policy_dir)
  if not (path / "saved_model.pb").is_file():
    raise FileNotFoundError(
        f"no SavedModel at {os.fspath(path)!r}: expected "
        f"{path / 'saved_model.pb'} (a run writes it when training finishes)")
  try:
    policy = tf.saved_model.load(str(path))
    time_step_spec = policy.action.concrete_functions[0].structured_input_signature[0][0]
    action_spec = policy.action.concrete_functions[0].structured_outputs.action
  except Exception as error:  # Protobuf, TF and attribute errors alike.
    raise ValueError(
        f"{os.fspath(path)!r} holds a corrupt or unreadable policy SavedModel "
        f"({type(error).__name__}: {str(error)[:300]})") from None
  observation = time_step_spec.observation
  shapes = {name: tuple(spec.shape[1:])
            for name, spec in observation["observation"].items()}
  return policy, PolicySignature(shapes, int(observation["mask"].shape[1]),
                                 tuple(action_spec.shape[1:]))


def planner_from_spec(spec: Mapping[str, Any], backend: str,
                      reflections_path: str | os.PathLike[str] | None,
                      seed: int) -> Any:
  """The planner a spec describes, on `backend` (any backend string).

  LLM backends get the spec's rules, prompt settings and reflection pool;
  their prompt must still be the one the spec recorded, or plans would not
  be those the policy was trained and evaluated with.
  """
  catalogue = catalogue_from_json(spec["catalogue"])
  settings = spec["planner"]
  rules = PlanRules(**settings["rules"])
  if backend == "heuristic":
    return make_planner("heuristic", catalogue, rules=rules, seed=seed)
  if prompt_template(catalogue, rules) != settings["prompt_template"]:
    raise ValueError(
        f"the planner prompt of this lerl_recsim version "
        f"({lerl_recsim.__version__}) differs from the one in the spec "
        f"(written by {spec.get('lerl_recsim_version')}); plan with the "
        "version that wrote it, or with planner='heuristic'")
  prompt_config = prompt_config_from_json(settings["prompt_config"])
  if settings["reflect_every"] is None:  # a planner without lessons
    return make_planner(backend, catalogue, rules=rules, seed=seed,
                        prompt_config=prompt_config, reflections=None)
  pool = (ReflectionPool.load(reflections_path) if reflections_path
          else ReflectionPool())
  return make_planner(backend, catalogue, rules=rules, seed=seed,
                      prompt_config=prompt_config,
                      reflect_every=settings["reflect_every"],
                      reflect_growth=settings["reflect_growth"],
                      reflections=pool)
