"""Turning per-item scores into slates that respect a mask."""

from __future__ import annotations

import numpy as np


def masked_top_k(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
  """The k best allowed items per row, best first: int32 [B, k].

  Excluded items never win, whatever their score (they are set to -inf, not
  scaled). Raises if a row allows fewer than k items.
  """
  allowed = mask.sum(axis=1)
  if (allowed < k).any():
    row = int(np.flatnonzero(allowed < k)[0])
    raise ValueError(
        f"row {row} allows {int(allowed[row])} items; a slate needs {k}")
  masked = np.where(mask, scores, -np.inf)
  if k == 1:
    return masked.argmax(axis=1)[:, None].astype(np.int32)
  top = np.argpartition(-masked, k - 1, axis=1)[:, :k]
  order = np.argsort(-np.take_along_axis(masked, top, axis=1), axis=1)
  return np.take_along_axis(top, order, axis=1).astype(np.int32)
