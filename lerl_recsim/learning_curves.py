"""Learning curves, and the rule that says when one has levelled off.

Agents are compared only where their curves have stopped rising. A greedy
policy's evaluation swings between checkpoints by more than the confidence
interval of one evaluation (a DQN measured 13.6 then 9.7 two thousand
iterations apart), so the rule compares the means of windows of evaluations
rather than single evaluations.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Mapping, Sequence

METRIC = "cumulative_reward"


@dataclasses.dataclass(frozen=True)
class PlateauRule:
  """Levelled off: the mean of the last `window` evaluations is no higher
  than the mean of the `window` before it plus the 95% confidence half-width
  of that difference (from each evaluation's own half-width, treating
  evaluations as independent).

  Attributes:
    window: evaluations per window; the rule needs 2 * window of them.
  """

  window: int = 3

  def __post_init__(self) -> None:
    if isinstance(self.window, bool) or not isinstance(self.window, int) \
        or self.window < 1:
      raise ValueError(f"window must be an int >= 1, got {self.window!r}")

  def describe(self) -> str:
    return (f"the mean of the last {self.window} evaluations is within the "
            f"95% CI of the mean of the {self.window} before it, or below it")

  def gain_and_margin(self, means: Sequence[float], ci95s: Sequence[float],
                      end: int) -> tuple[float, float] | None:
    """(rise of the window ending at evaluation `end` (exclusive) over the
    window before, its 95% half-width), or None with too few evaluations."""
    w = self.window
    if end < 2 * w:
      return None
    last, previous = means[end - w:end], means[end - 2 * w:end - w]
    spread = [c for c in ci95s[end - 2 * w:end] if math.isfinite(c)]
    margin = math.sqrt(sum(c * c for c in spread)) / w
    return sum(last) / w - sum(previous) / w, margin

  def levelled(self, means: Sequence[float], ci95s: Sequence[float],
               end: int | None = None) -> bool:
    """Whether the curve up to evaluation `end` (default: all) has levelled."""
    end = len(means) if end is None else end
    outcome = self.gain_and_margin(means, ci95s, end)
    return outcome is not None and outcome[0] <= outcome[1]


def read_history(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The evaluations of a run (`eval/history.jsonl`) by iteration, oldest
  first; a re-evaluated iteration (after a resume) keeps its last record, and
  a line cut short by a kill is skipped."""
  path = pathlib.Path(run_dir) / "eval" / "history.jsonl"
  records: dict[int, dict[str, Any]] = {}
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      records[int(record["iteration"])] = record
  return [records[i] for i in sorted(records)]


def value_at(curve: Mapping[str, Any], fraction: float) -> float:
  """The curve's mean at the last evaluation within `fraction` of the run's
  iterations (NaN if none): sample efficiency at 10% or 30% of a budget."""
  iterations = curve.get("iterations") or []
  if not iterations:
    return math.nan
  limit = fraction * iterations[-1] + 1e-9
  within = [m for i, m in zip(iterations, curve["mean"]) if i <= limit]
  return within[-1] if within else math.nan


def summarise(history: Sequence[Mapping[str, Any]],
              rule: PlateauRule = PlateauRule()) -> dict[str, Any]:
  """The curve of cumulative reward and where the rule first held.

  Returns:
    iterations, user_steps (None where not recorded), mean and ci95 lists;
    `levelled_off` (the rule holds at the last evaluation), `levelled_at`
    (the iteration of the first evaluation at which it held, or None),
    `last_gain` and `last_margin` (the rule's figures at the end), `rule`.
  """
  means = [float(h[METRIC]["mean"]) for h in history]
  ci95s = [float(h[METRIC]["ci95"]) for h in history]
  iterations = [int(h["iteration"]) for h in history]
  first = next((end for end in range(1, len(means) + 1)
                if rule.levelled(means, ci95s, end)), None)
  outcome = rule.gain_and_margin(means, ci95s, len(means))
  return {
      "iterations": iterations,
      "user_steps": [h.get("user_steps") for h in history],
      "mean": means,
      "ci95": ci95s,
      "levelled_off": rule.levelled(means, ci95s),
      "levelled_at": iterations[first - 1] if first else None,
      "last_gain": outcome[0] if outcome else None,
      "last_margin": outcome[1] if outcome else None,
      "rule": rule.describe(),
  }


def format_curve(name: str, curve: Mapping[str, Any], points: int = 6) -> str:
  """One line: the curve at up to `points` evaluations and the verdict."""
  iterations, means = curve["iterations"], curve["mean"]
  if not means:
    return f"{name}: no evaluations"
  count = min(points, len(means))
  picks = sorted({round(i * (len(means) - 1) / max(count - 1, 1))
                  for i in range(count)})
  shown = ", ".join(f"{means[i]:.2f} at {iterations[i]:,}" for i in picks)
  if curve["last_gain"] is None:
    verdict = "too few evaluations to judge"
  elif curve["levelled_off"]:
    verdict = (f"levelled off (last windows differ by "
               f"{curve['last_gain']:+.2f}, CI ±{curve['last_margin']:.2f})")
  else:
    verdict = (f"still rising (last windows differ by "
               f"{curve['last_gain']:+.2f}, CI ±{curve['last_margin']:.2f})")
  return f"{name}: {shown} iterations; {verdict}"
