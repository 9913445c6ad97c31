"""The `movielens` and `ratings_csv` scenarios: worlds calibrated from data.

Users and items come from a matrix factorisation of real ratings, categories
and their groups from the data; the dynamics (choice, interest evolution,
satiation with spill-over, every exit rule) are `interest_evolution`'s, so
the synthetic and the calibrated scenarios differ only in who the users and
items are.

Mapping (documented in docs/movielens.md): with the fit
r_ui ≈ μ + b_u + b_i + p_u·q_i, a user's preference for an item is
b_i + p_u·q_i (b_u is a rating-style offset, the same for every item).
Standardised over the whole user × item preference matrix with mean m and
std s, it becomes affinity + quality: interests p_u/√s, item features
q_i/√s, quality (b_i − m)/s. Engagement sigmoid(2·z) then spans (0, 1):
a one-std-better item gives 0.88, an average one 0.5.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from lerl_recsim.scenarios import calibration, calibration_cache
from lerl_recsim.scenarios import category_groups, interest_evolution
from lerl_recsim.scenarios import corpus as corpus_lib
from lerl_recsim.scenarios import factorisation, ratings_data
from lerl_recsim.scenarios import user as user_lib

# Items carry no duration in rating data; the synthetic scenario's length.
ITEM_LENGTH = 4.0
# Default number of semantic groups clustered from category co-occurrence;
# on MovieLens 8 separates e.g. Action/Adventure/Sci-Fi from
# Thriller/Crime/Mystery/Horror (see docs/movielens.md).
DEFAULT_NUM_GROUPS = 8

# Overrides about where the data is, shared by both scenarios.
LOCATION_OVERRIDES = ("data_dir", "groups_file", "cache_dir")
# Overrides describing a generic CSV format (the `ratings_csv` scenario).
FORMAT_OVERRIDES = tuple(f.name for f in dataclasses.fields(
    ratings_data.DataFormat))


def calibrated_items(model: factorisation.BiasedFactorisation,
                     item_categories: np.ndarray
                     ) -> tuple[corpus_lib.Items, np.ndarray, dict[str, float]]:
  """Items, the interest pool and the standardisation (m, s) of the mapping."""
  preference = model.item_bias[None, :] + model.user_factors @ model.item_factors.T
  mean, std = float(preference.mean()), float(preference.std())
  if not std > 0.0:
    raise ValueError("the fitted preferences are all equal; the data gives "
                     "no way to tell items apart (more ratings needed)")
  root = np.sqrt(std)
  items = corpus_lib.Items(
      categories=item_categories.astype(np.float32),
      quality=((model.item_bias - mean) / std).astype(np.float32),
      features=(model.item_factors / root).astype(np.float32),
      length=np.full(len(model.item_bias), ITEM_LENGTH, np.float32))
  pool = (model.user_factors / root).astype(np.float32)
  return items, pool, {"preference_mean": round(mean, 6),
                       "preference_std": round(std, 6)}


def _split(scenario: str, overrides: dict[str, Any], data_keys: tuple[str, ...]
           ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
  """Sorts overrides into data, calibration and dynamics ones."""
  calibration_keys = {f.name for f in dataclasses.fields(
      calibration.CalibrationParams)} | {"num_groups"}
  if "num_items" in overrides:
    raise ValueError(
        f"num_items is set by the data in scenario {scenario!r}; filter with "
        "min_item_ratings instead")
  dynamics_keys = ({f.name for f in dataclasses.fields(
      interest_evolution.ScenarioParams)} - {"num_items"}) | {
          f.name for f in dataclasses.fields(user_lib.UserParams)} | {
              "exit_params", "user_params"}
  unknown = sorted(set(overrides) - set(data_keys) - calibration_keys -
                   dynamics_keys)
  if unknown:
    raise ValueError(
        f"unknown override(s) {unknown} for scenario {scenario!r}; accepted: "
        f"{sorted(set(data_keys) | calibration_keys | dynamics_keys)}")
  pick = lambda keys: {k: v for k, v in overrides.items() if k in keys}
  return pick(data_keys), pick(calibration_keys), pick(dynamics_keys)


def build_calibrated(num_users: int, seed: int, scenario: str,
                     data_format: ratings_data.DataFormat,
                     data_dir: str | None = None,
                     groups_file: str | None = None,
                     cache_dir: str | None = None,
                     num_groups: int = DEFAULT_NUM_GROUPS,
                     calibration_overrides: dict[str, Any] | None = None,
                     **dynamics: Any) -> interest_evolution.Scenario:
  """Calibrates (or reads the cached calibration) and builds the network."""
  if (isinstance(num_groups, bool) or not isinstance(num_groups, int) or
      num_groups < 1):
    raise ValueError(f"num_groups must be an int >= 1, got {num_groups!r}")
  params = calibration.CalibrationParams.from_dict(calibration_overrides)
  fitted, source = calibration.load_or_fit(data_format, data_dir, params,
                                           cache_dir)
  if groups_file is None:
    catalogue = category_groups.cooccurrence_groups(
        fitted.category_names, fitted.item_categories, num_groups)
    groups_record: dict[str, Any] = {"from": "co-occurrence",
                                     "num_groups": num_groups}
  else:
    path = pathlib.Path(groups_file).expanduser().resolve()
    catalogue = category_groups.groups_from_file(path, fitted.category_names)
    groups_record = {"from": str(path),
                     "sha256": calibration_cache.file_sha256(path)}
  items, pool, scaling = calibrated_items(fitted.model, fitted.item_categories)
  fields = dataclasses.asdict(data_format)
  members = lambda g: [catalogue.category_names[c]
                       for c in np.flatnonzero(catalogue.category_group == g)]
  extra = {
      "data": {**fields,
               "ratings_path": str(source.ratings_path),
               "categories_path": str(source.categories_path),
               "ratings_sha256": source.ratings_sha256,
               "categories_sha256": source.categories_sha256},
      "calibration": params.to_dict(),
      "calibration_results": {**fitted.summary(), **scaling,
                              "cache_key": source.cache_key},
      "catalogue": {"categories": list(catalogue.category_names),
                    "groups": {name: members(g) for g, name in
                               enumerate(catalogue.group_names)},
                    "grouping": groups_record},
  }
  return interest_evolution.build(
      num_users=num_users, seed=seed, catalogue=catalogue, items=items,
      interest_pool=pool, name=scenario, extra_config=extra, **dynamics)


def build_movielens(num_users: int, seed: int,
                    **overrides: Any) -> interest_evolution.Scenario:
  """`movielens`: any MovieLens-format directory (ratings.csv, movies.csv).

  Overrides: `data_dir` (else $LERL_DATA_DIR), `groups_file`, `cache_dir`,
  `num_groups`, `CalibrationParams` fields, and the dynamics overrides of
  `interest_evolution` except `num_items`.
  """
  data, fit, dynamics = _split("movielens", overrides, LOCATION_OVERRIDES)
  num_groups = fit.pop("num_groups", DEFAULT_NUM_GROUPS)
  return build_calibrated(num_users, seed, "movielens", ratings_data.MOVIELENS,
                          num_groups=num_groups, calibration_overrides=fit,
                          **data, **dynamics)


def build_ratings_csv(num_users: int, seed: int,
                      **overrides: Any) -> interest_evolution.Scenario:
  """`ratings_csv`: any ratings CSV plus an item-categories CSV.

  Requires `ratings_file` and `categories_file` (relative paths start at
  `data_dir` / $LERL_DATA_DIR); column names, separators and the
  no-category marker are `DataFormat` fields, given as overrides; the rest
  as for `movielens`.
  """
  data, fit, dynamics = _split("ratings_csv", overrides,
                               LOCATION_OVERRIDES + FORMAT_OVERRIDES)
  missing = [key for key in ("ratings_file", "categories_file")
             if key not in data]
  if missing:
    raise ValueError(
        f"scenario 'ratings_csv' needs {missing}: the ratings CSV (user, "
        "item, value columns) and the item-categories CSV (item, categories "
        "columns); see docs/movielens.md")
  data_format = ratings_data.DataFormat(**{
      key: data.pop(key) for key in FORMAT_OVERRIDES if key in data})
  num_groups = fit.pop("num_groups", DEFAULT_NUM_GROUPS)
  return build_calibrated(num_users, seed, "ratings_csv", data_format,
                          num_groups=num_groups, calibration_overrides=fit,
                          **data, **dynamics)
