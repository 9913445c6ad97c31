"""Calibrating users and items from rating data, with an on-disk cache.

Reads and filters the ratings, fits a biased matrix factorisation on all
but a seeded held-out share, and measures the held-out RMSE. The result is
cached under a key made of the data files' hashes and every parameter that
changes it, so a second build reads it instead of refitting.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, ClassVar, Mapping

import numpy as np

from lerl_recsim.scenarios import calibration_cache, factorisation, params
from lerl_recsim.scenarios import ratings_data

# Bump when the fit or the entry layout changes: old entries are then unused.
CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class CalibrationParams(params.Params):
  """Filtering and factorisation (defaults documented in docs/movielens.md).

  Attributes:
    min_user_ratings: users with fewer ratings (among kept items) are dropped.
    min_item_ratings: items with fewer ratings (among kept users) are dropped.
    num_factors: latent dimension; also the scenario's interest dimension.
    regularisation: ALS ridge penalty per rating (weighted-λ).
    num_sweeps: ALS sweeps (users then items).
    holdout_fraction: share of ratings held out to measure the RMSE.
    mf_seed: seeds the held-out split and the factor initialisation; kept
      apart from the environment seed so every environment seed simulates
      the same calibrated world.
  """

  min_user_ratings: int = 20
  min_item_ratings: int = 20
  num_factors: int = 16
  regularisation: float = 0.12
  num_sweeps: int = 15
  holdout_fraction: float = 0.1
  mf_seed: int = 0
  _RANGES: ClassVar = {
      "min_user_ratings": (1, None), "min_item_ratings": (1, None),
      "num_factors": (1, None), "regularisation": (0.0, None),
      "num_sweeps": (1, None), "holdout_fraction": (0.0, 0.5),
  }


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A calibrated world: kept users and items, their categories and model.

  Attributes:
    user_ids, item_ids: original ids of the kept users and items.
    category_names: categories of the kept items, most frequent first.
    item_categories: float32 [I, C] multi-hot.
    model: the factorisation fitted on the non-held-out ratings.
    heldout_rmse: RMSE of the model on the held-out ratings.
    baseline_rmse: RMSE of predicting the training mean, for scale.
    num_ratings, num_heldout: ratings after filtering; of them held out.
    uncategorised_items: rated items left out for having no category.
  """

  user_ids: tuple[str, ...]
  item_ids: tuple[str, ...]
  category_names: tuple[str, ...]
  item_categories: np.ndarray
  model: factorisation.BiasedFactorisation
  heldout_rmse: float
  baseline_rmse: float
  num_ratings: int
  num_heldout: int
  uncategorised_items: int

  def summary(self) -> dict[str, Any]:
    """The figures recorded in a scenario's resolved configuration."""
    return {"heldout_rmse": round(self.heldout_rmse, 4),
            "baseline_rmse": round(self.baseline_rmse, 4),
            "num_users": len(self.user_ids), "num_items": len(self.item_ids),
            "num_categories": len(self.category_names),
            "num_ratings": self.num_ratings, "num_heldout": self.num_heldout,
            "uncategorised_items": self.uncategorised_items}


def fit_calibration(data: ratings_data.RatingsData,
                    calibration_params: CalibrationParams,
                    source: str) -> Calibration:
  """Filters, splits, fits and scores."""
  p = calibration_params
  data = ratings_data.filter_min_counts(
      data, p.min_user_ratings, p.min_item_ratings, source)
  heldout = factorisation.holdout_mask(data.num_ratings, p.holdout_fraction,
                                       p.mf_seed)
  train = ~heldout
  model = factorisation.fit(
      data.users[train], data.items[train], data.values[train],
      len(data.user_ids), len(data.item_ids), p.num_factors,
      p.regularisation, p.num_sweeps, p.mf_seed)
  observed = data.values[heldout]
  if heldout.any():
    heldout_rmse = factorisation.rmse(
        model.predict(data.users[heldout], data.items[heldout]), observed)
    baseline_rmse = factorisation.rmse(
        np.float32(data.values[train].mean()), observed)
  else:
    heldout_rmse = baseline_rmse = float("nan")
  return Calibration(
      user_ids=data.user_ids, item_ids=data.item_ids,
      category_names=data.category_names,
      item_categories=data.item_categories, model=model,
      heldout_rmse=heldout_rmse, baseline_rmse=baseline_rmse,
      num_ratings=data.num_ratings, num_heldout=int(heldout.sum()),
      uncategorised_items=data.uncategorised_items)


def _to_arrays(calibration: Calibration) -> dict[str, np.ndarray]:
  c, m = calibration, calibration.model
  return {
      "user_ids": np.array(c.user_ids), "item_ids": np.array(c.item_ids),
      "category_names": np.array(c.category_names),
      "item_categories": c.item_categories,
      "global_mean": np.float64(m.global_mean), "user_bias": m.user_bias,
      "item_bias": m.item_bias, "user_factors": m.user_factors,
      "item_factors": m.item_factors,
      "heldout_rmse": np.float64(c.heldout_rmse),
      "baseline_rmse": np.float64(c.baseline_rmse),
      "num_ratings": np.int64(c.num_ratings),
      "num_heldout": np.int64(c.num_heldout),
      "uncategorised_items": np.int64(c.uncategorised_items),
  }


def _from_arrays(a: Mapping[str, np.ndarray]) -> Calibration:
  return Calibration(
      user_ids=tuple(a["user_ids"].tolist()),
      item_ids=tuple(a["item_ids"].tolist()),
      category_names=tuple(a["category_names"].tolist()),
      item_categories=a["item_categories"],
      model=factorisation.BiasedFactorisation(
          global_mean=float(a["global_mean"]), user_bias=a["user_bias"],
          item_bias=a["item_bias"], user_factors=a["user_factors"],
          item_factors=a["item_factors"]),
      heldout_rmse=float(a["heldout_rmse"]),
      baseline_rmse=float(a["baseline_rmse"]),
      num_ratings=int(a["num_ratings"]), num_heldout=int(a["num_heldout"]),
      uncategorised_items=int(a["uncategorised_items"]))


@dataclasses.dataclass(frozen=True)
class CalibrationSource:
  """What a calibration was made from, for the resolved configuration."""

  ratings_path: pathlib.Path
  categories_path: pathlib.Path
  ratings_sha256: str
  categories_sha256: str
  cache_key: str


def load_or_fit(data_format: ratings_data.DataFormat,
                data_dir: str | None,
                calibration_params: CalibrationParams,
                cache_dir: str | None = None
                ) -> tuple[Calibration, CalibrationSource]:
  """The cached calibration of these files and parameters, fitted if absent.

  The fit only starts after the whole input has been read and checked, and
  the entry is written atomically, so bad input never reaches the cache.
  """
  ratings_path, categories_path = ratings_data.data_paths(
      data_format, ratings_data.resolve_data_dir(data_dir, data_format))
  digests = (calibration_cache.file_sha256(ratings_path),
             calibration_cache.file_sha256(categories_path))
  fields = dataclasses.asdict(data_format)
  del fields["ratings_file"], fields["categories_file"]
  key = calibration_cache.entry_key(digests, {
      "format": CACHE_FORMAT, "data_format": fields,
      "calibration": calibration_params.to_dict()})
  path = calibration_cache.cache_dir(cache_dir) / f"calibration-{key}.npz"
  source = CalibrationSource(ratings_path, categories_path, *digests, key)
  cached = calibration_cache.load(path)
  if cached is not None:
    return _from_arrays(cached), source
  data = ratings_data.read_ratings(ratings_path, categories_path, data_format)
  calibration = fit_calibration(data, calibration_params, str(ratings_path))
  calibration_cache.save_atomic(path, _to_arrays(calibration))
  return calibration, source
