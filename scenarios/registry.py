"""Scenarios by name."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from lerl_recsim.scenarios import calibrated, interest_evolution

ScenarioBuilder = Callable[..., interest_evolution.Scenario]

SCENARIOS: Mapping[str, ScenarioBuilder] = {
    "interest_evolution": interest_evolution.build,
    "movielens": calibrated.build_movielens,
    "ratings_csv": calibrated.build_ratings_csv,
}


def build_scenario(name: str, num_users: int, seed: int,
                   **overrides: Any) -> interest_evolution.Scenario:
  if name not in SCENARIOS:
    raise ValueError(f"unknown scenario {name!r}; accepted: {sorted(SCENARIOS)}")
  return SCENARIOS[name](num_users=num_users, seed=seed, **overrides)
