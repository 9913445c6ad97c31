"""The `interest_evolution` scenario: categories, satiation and departures.

RecSim NG's interest-evolution application, made category-aware and given a
notion of a user leaving: a corpus of items in named categories arranged in
semantic groups, users whose interests drift toward what they consume and
who tire of repeated categories, and a pluggable exit rule.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
from recsim_ng.core import network as network_lib
from recsim_ng.entities.recommendation import recommender as recommender_lib

from lerl_recsim.scenarios import catalogue as catalogue_lib
from lerl_recsim.scenarios import corpus as corpus_lib
from lerl_recsim.scenarios import exit_rules, params, session_history, story
from lerl_recsim.scenarios import user as user_lib


@dataclasses.dataclass(frozen=True)
class ScenarioParams(params.Params):
  """Size and shape of the simulation (defaults documented in the README).

  Attributes:
    num_items: catalogue size, spread evenly over the 20 categories.
    slate_size: items per recommendation (the user picks at most one).
    history_length: past steps visible to the recommender.
    exit_rule: name of the exit rule (see `exit_rules.EXIT_RULES`).
    max_session_length: cap on a session; None takes the rule's default.
    corpus_seed: seeds the item table. Kept apart from the environment's
      seed so that training and evaluation environments (different users)
      share one catalogue.
  """

  num_items: int = 500
  slate_size: int = 1
  history_length: int = 10
  exit_rule: str = "satisfaction"
  max_session_length: int | None = None
  corpus_seed: int = 0
  _RANGES: ClassVar = {"num_items": (1, None), "slate_size": (1, None),
                       "history_length": (1, None)}


@dataclasses.dataclass(frozen=True)
class Scenario:
  """A built scenario: the RecSim NG network plus what the environment and
  policies need to know about it.

  `network` is the external-slate story the environments step;
  `recommender_network` puts a RecSim NG recommender into the same story
  instead, for RecSim NG's runtime.
  """

  name: str
  network: network_lib.Network
  entities: story.Entities
  catalogue: catalogue_lib.Catalogue
  items: corpus_lib.Items
  num_users: int
  slate_size: int
  history_length: int
  max_session_length: int
  config: Mapping[str, Any]
  _rebuild: Callable[[int], "Scenario"] = dataclasses.field(
      default=None, repr=False, compare=False)

  @property
  def user(self) -> user_lib.SatiationUser:
    return self.entities.user

  def recommender_network(
      self, recommender: recommender_lib.BaseRecommender
  ) -> story.SessionNetwork:
    """The scenario with `recommender` (built from `entities.config`) in its
    story, seeded with the scenario's seed, for RecSim NG's runtime:
    `runtime.TFRuntime(network).trajectory(length=...)`."""
    return story.SessionNetwork(
        story.recommender_story(self.entities, recommender),
        seed=self.config["seed"])

  def with_num_users(self, num_users: int) -> "Scenario":
    """The same scenario (catalogue, items, dynamics, exit rule) with
    another number of user slots, e.g. for simulating many futures."""
    return self._rebuild(num_users)


def split_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """Sorts flat overrides into scenario, user and exit-rule parameters.

  `exit_params` (a mapping) goes to the exit rule; user parameters may be
  given flat (e.g. `satiation_decay=0.9`) or as `user_params={...}`.
  """
  overrides = dict(overrides)
  exit_params = dict(overrides.pop("exit_params", None) or {})
  user_params = dict(overrides.pop("user_params", None) or {})
  scenario_fields = {f.name for f in dataclasses.fields(ScenarioParams)}
  user_fields = {f.name for f in dataclasses.fields(user_lib.UserParams)}
  scenario: dict[str, Any] = {}
  for key, value in overrides.items():
    if key in scenario_fields:
      scenario[key] = value
    elif key in user_fields:
      user_params[key] = value
    else:
      raise ValueError(
          f"unknown scenario override {key!r}; accepted: "
          f"{sorted(scenario_fields | user_fields | {'exit_params', 'user_params'})}")
  return {"scenario": scenario, "user": user_params, "exit": exit_params}


def build(num_users: int, seed: int,
          catalogue: catalogue_lib.Catalogue | None = None,
          items: corpus_lib.Items | None = None,
          interest_pool: np.ndarray | None = None,
          name: str = "interest_evolution",
          extra_config: Mapping[str, Any] | None = None,
          **overrides: Any) -> Scenario:
  """Builds the scenario's RecSim NG network.

  Args:
    num_users: simultaneous user slots (the batch size).
    seed: recorded; the environment seeds the dynamics with it (the item
      table comes from the `corpus_seed` override).
    catalogue: category taxonomy; defaults to the 20-category one.
    items: a ready item table (calibrated scenarios pass theirs); by default
      `num_items` single-category items are drawn from `seed`.
    interest_pool: optional user interest vectors new users are drawn from
      (calibrated scenarios pass their user factors).
    name: the scenario's registered name.
    extra_config: recorded in the resolved configuration (e.g. data paths).
    **overrides: `ScenarioParams` fields, `UserParams` fields and
      `exit_params` (see `split_overrides`).
  """
  if isinstance(num_users, bool) or not isinstance(num_users, int) or num_users < 1:
    raise ValueError(f"num_users must be an int >= 1, got {num_users!r}")
  groups = split_overrides(overrides)
  scenario_params = ScenarioParams.from_dict(groups["scenario"])
  user_params = user_lib.UserParams.from_dict(groups["user"])
  rule_spec, rule_params, max_length = exit_rules.resolve_exit_rule(
      scenario_params.exit_rule, groups["exit"],
      scenario_params.max_session_length)
  catalogue = catalogue or catalogue_lib.default_catalogue()
  if items is None:
    items = corpus_lib.sample_category_items(
        catalogue, scenario_params.num_items,
        np.random.default_rng(scenario_params.corpus_seed))
  if scenario_params.slate_size > items.num_items:
    raise ValueError(
        f"slate_size={scenario_params.slate_size} exceeds the "
        f"{items.num_items} items of the catalogue")

  config = {"num_users": num_users, "num_topics": items.features.shape[1],
            "num_docs": items.num_items,
            "slate_size": scenario_params.slate_size,
            "history_length": scenario_params.history_length,
            "num_categories": catalogue.num_categories}
  corpus = corpus_lib.StaticItemCorpus(config, items)
  user = user_lib.SatiationUser(config, catalogue, user_params, interest_pool)
  exit_rule = rule_spec.rule_class(
      num_users, catalogue.num_categories, scenario_params.slate_size,
      max_length, rule_params)
  entities = story.Entities(
      config=config, corpus=corpus, user=user, exit_rule=exit_rule,
      history=session_history.SessionHistory(
          num_users, scenario_params.history_length,
          scenario_params.slate_size, catalogue.num_categories))
  resolved = {
      "scenario": name, "num_users": num_users, "seed": seed,
      **dataclasses.replace(scenario_params,
                            max_session_length=max_length).to_dict(),
      "num_items": items.num_items,
      "user_params": user_params.to_dict(),
      "exit_params": rule_params.to_dict(),
      **dict(extra_config or {}),
  }
  return Scenario(
      name=name,
      network=network_lib.Network(
          variables=story.external_slate_story(entities)),
      entities=entities,
      catalogue=catalogue, items=items, num_users=num_users,
      slate_size=scenario_params.slate_size,
      history_length=scenario_params.history_length,
      max_session_length=max_length, config=resolved,
      _rebuild=functools.partial(
          build, seed=seed, catalogue=catalogue, items=items,
          interest_pool=interest_pool, name=name, extra_config=extra_config,
          **overrides))
