"""Biased matrix factorisation fitted by alternating least squares.

r_ui ≈ μ + b_u + b_i + p_u · q_i. ALS (rather than SGD) because each
half-step is an exact ridge regression per user or item: no learning rate
to tune, and a few sweeps converge, fast enough in plain numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BiasedFactorisation:
  """A fitted model; arrays float32."""

  global_mean: float
  user_bias: np.ndarray
  item_bias: np.ndarray
  user_factors: np.ndarray
  item_factors: np.ndarray

  def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return (self.global_mean + self.user_bias[users] + self.item_bias[items] +
            np.sum(self.user_factors[users] * self.item_factors[items], axis=1))


def holdout_mask(num_ratings: int, fraction: float, seed: int) -> np.ndarray:
  """bool [R]: a seeded `fraction` of the rows, held out from the fit."""
  chosen = np.random.default_rng(seed).permutation(num_ratings)
  mask = np.zeros(num_ratings, bool)
  mask[chosen[:int(round(fraction * num_ratings))]] = True
  return mask


def rmse(predicted: np.ndarray, observed: np.ndarray) -> float:
  return float(np.sqrt(np.mean((predicted - observed) ** 2)))


def _solve_side(rows: np.ndarray, cols: np.ndarray, residual: np.ndarray,
                num_rows: int, other_factors: np.ndarray,
                regularisation: float) -> tuple[np.ndarray, np.ndarray]:
  """Ridge-regresses each row's [factors, bias] on the other side's factors.

  The penalty is regularisation × (the row's number of ratings), the
  weighted-λ of Zhou et al. (2008), so heavy and light raters shrink alike.
  """
  dim = other_factors.shape[1]
  design = np.concatenate(
      [other_factors[cols], np.ones((len(cols), 1), other_factors.dtype)],
      axis=1)
  order = np.argsort(rows, kind="stable")
  bounds = np.searchsorted(rows[order], np.arange(num_rows + 1))
  solution = np.zeros((num_rows, dim + 1), np.float64)
  for row in range(num_rows):
    picked = order[bounds[row]:bounds[row + 1]]
    if len(picked) == 0:
      continue
    x = design[picked]
    gram = x.T @ x + regularisation * len(picked) * np.eye(dim + 1)
    solution[row] = np.linalg.solve(gram, x.T @ residual[picked])
  return solution[:, :dim], solution[:, dim]


def fit(users: np.ndarray, items: np.ndarray, values: np.ndarray,
        num_users: int, num_items: int, num_factors: int,
        regularisation: float, num_sweeps: int,
        seed: int) -> BiasedFactorisation:
  """Fits the model on the given rating rows.

  Factors start as N(0, 0.1²) draws from `seed`; each sweep solves the users
  given the items, then the items given the users.
  """
  rng = np.random.default_rng(seed)
  values = values.astype(np.float64)
  mean = float(values.mean())
  user_factors = rng.normal(0.0, 0.1, (num_users, num_factors))
  item_factors = rng.normal(0.0, 0.1, (num_items, num_factors))
  user_bias = np.zeros(num_users)
  item_bias = np.zeros(num_items)
  for _ in range(num_sweeps):
    user_factors, user_bias = _solve_side(
        users, items, values - mean - item_bias[items], num_users,
        item_factors, regularisation)
    item_factors, item_bias = _solve_side(
        items, users, values - mean - user_bias[users], num_items,
        user_factors, regularisation)
  return BiasedFactorisation(
      global_mean=mean, user_bias=user_bias.astype(np.float32),
      item_bias=item_bias.astype(np.float32),
      user_factors=user_factors.astype(np.float32),
      item_factors=item_factors.astype(np.float32))
