"""The plateau rule and learning-curve summaries, on hand-made curves."""

import json
import math

import pytest

from lerl_recsim import learning_curves
from lerl_recsim.learning_curves import PlateauRule


def history(means, ci95=0.6, every=1000):
  return [{"iteration": every * (i + 1), "user_steps": 256 * every * (i + 1),
           "cumulative_reward": {"mean": m, "ci95": ci95}}
          for i, m in enumerate(means)]


def test_rule_compares_window_means_against_the_combined_half_width():
  rule = PlateauRule(window=2)
  # Windows (10, 12) and (11, 12): gain 0.5; margin sqrt(4 * 0.6^2) / 2 = 0.6.
  assert rule.gain_and_margin([10, 12, 11, 12], [0.6] * 4, 4) == \
      pytest.approx((0.5, 0.6))
  assert rule.levelled([10, 12, 11, 12], [0.6] * 4)
  # (10, 12) -> (12, 12.4): gain 1.2 > 0.6, still rising.
  assert not rule.levelled([10, 12, 12, 12.4], [0.6] * 4)
  # A falling curve has levelled off (it is not rising).
  assert rule.levelled([12, 12, 9, 9], [0.1] * 4)


def test_rule_needs_two_windows_and_ignores_undefined_half_widths():
  rule = PlateauRule(window=3)
  assert rule.gain_and_margin([1.0] * 5, [0.1] * 5, 5) is None
  assert not rule.levelled([1.0] * 5, [0.1] * 5)
  gain, margin = rule.gain_and_margin([1.0] * 6, [math.nan] + [0.3] * 5, 6)
  assert gain == 0.0 and margin == pytest.approx(math.sqrt(5 * 0.09) / 3)


@pytest.mark.parametrize("window", [0, -1, 1.5, True])
def test_rule_rejects_a_bad_window(window):
  with pytest.raises(ValueError, match="window must be an int >= 1"):
    PlateauRule(window=window)


def test_summary_reports_the_first_evaluation_where_the_rule_held():
  # Rises by 2 per evaluation, then flat from the 5th on.
  curve = learning_curves.summarise(history([2, 4, 6, 8, 10, 10, 10, 10]),
                                    PlateauRule(window=2))
  assert curve["iterations"] == [1000 * i for i in range(1, 9)]
  assert curve["user_steps"][-1] == 256 * 8000
  # Windows (8, 10) -> (10, 10) at the 7th evaluation: gain 1.0 > 0.6;
  # (10, 10) -> (10, 10) at the 8th: gain 0, the first time the rule holds.
  assert curve["levelled_at"] == 8000 and curve["levelled_off"]
  assert curve["last_gain"] == 0.0
  rising = learning_curves.summarise(history([1, 2, 3, 4, 5, 6]))
  assert not rising["levelled_off"] and rising["levelled_at"] is None
  assert rising["last_gain"] == pytest.approx(3.0)


def test_history_is_read_from_a_run_directory_and_formatted(tmp_path):
  (tmp_path / "eval").mkdir()
  lines = history([5, 6, 7, 7, 7, 7, 7])
  (tmp_path / "eval" / "history.jsonl").write_text(
      "".join(json.dumps(line) + "\n" for line in lines))
  assert learning_curves.read_history(tmp_path) == lines
  assert learning_curves.read_history(tmp_path / "missing") == []
  text = learning_curves.format_curve(
      "dqn", learning_curves.summarise(lines), points=3)
  assert text.startswith("dqn: 5.00 at 1,000, 7.00 at 4,000, 7.00 at 7,000 "
                         "iterations; levelled off")
  assert "still rising" in learning_curves.format_curve(
      "dqn", learning_curves.summarise(history([1, 2, 3, 4, 5, 9])))
  assert learning_curves.format_curve(
      "x", learning_curves.summarise([])) == "x: no evaluations"
