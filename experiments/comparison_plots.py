"""Pictures of a comparison: learning curves, category exposure, the table.

Bands are 95% Student-t confidence intervals across seeds, like the table.
Uses matplotlib's object API (no pyplot), so no display or global backend
is involved.
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lerl_recsim import metrics
from lerl_recsim.learning_curves import read_history
from lerl_recsim.experiments import comparison

Condition = tuple[str, str]
MIN_ACTIVE_SHARE = 0.1


def band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and CI95 half-width across seeds (rows) at each column."""
  pairs = [metrics.mean_and_ci95(matrix[:, j]) for j in range(matrix.shape[1])]
  return (np.array([p["mean"] for p in pairs]),
          np.array([p["ci95"] for p in pairs]))


def plot_band(axes: Axes, x: np.ndarray, matrix: np.ndarray, label: str,
              color: Any) -> None:
  mean, ci95 = band(matrix)
  axes.plot(x, mean, color=color, label=label)
  if np.isfinite(ci95).any():
    axes.fill_between(x, mean - ci95, mean + ci95, color=color, alpha=0.2,
                      linewidth=0)


def plot_level(axes: Axes, values: np.ndarray, label: str, color: Any) -> None:
  """An untrained (scripted) method's one evaluation, as a dashed level."""
  mean, ci95 = band(values[:, None])
  axes.axhline(mean[0], color=color, linestyle="--", label=label)
  if np.isfinite(ci95[0]):
    axes.axhspan(mean[0] - ci95[0], mean[0] + ci95[0], color=color, alpha=0.1,
                 linewidth=0)


def layout(runs: Sequence[comparison.ComparisonRun]
           ) -> tuple[list[Condition], list[comparison.Method]]:
  conditions = list(dict.fromkeys(run.condition for run in runs))
  methods = list(dict.fromkeys(run.method for run in runs))
  return conditions, methods


def seeds_of(runs: Sequence[comparison.ComparisonRun], condition: Condition,
             method: comparison.Method) -> list[comparison.ComparisonRun]:
  return [r for r in runs if r.condition == condition and r.method == method]


def new_figure(rows: int, columns: int, width: float = 4.5,
               height: float = 3.2) -> tuple[Figure, np.ndarray]:
  figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
  return figure, np.asarray(figure.subplots(rows, columns, squeeze=False))


def finish(figure: Figure, axes: np.ndarray, path: pathlib.Path) -> pathlib.Path:
  handles, labels = axes[0, 0].get_legend_handles_labels()
  if handles:
    figure.legend(handles, labels, loc="outside lower center",
                  ncols=min(len(labels), 5))
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=100)
  return path


def learning_curves(runs: Sequence[comparison.ComparisonRun],
                    output_dir: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
  """Evaluation cumulative reward and interaction length against training
  user-steps (the cost agents with different iterations share; iterations
  for runs that did not record them); methods evaluated once (scripted
  agents) are dashed levels."""
  names = ("cumulative_reward", "interaction_length")
  conditions, methods = layout(runs)
  figure, axes = new_figure(len(conditions), len(names))
  for i, condition in enumerate(conditions):
    for j, name in enumerate(names):
      axes[i, j].set(title=f"{condition[0]} / {condition[1]}",
                     xlabel="training user-steps",
                     ylabel=name.replace("_", " "))
    for k, method in enumerate(methods):
      histories = [h for h in (
          {int(r["iteration"]): r for r in read_history(run.directory(output_dir))}
          for run in seeds_of(runs, condition, method)) if h]
      if not histories:
        continue
      iterations = sorted(set.intersection(*(set(h) for h in histories)))
      steps = [histories[0][t].get("user_steps") for t in iterations]
      x = np.array(iterations if None in steps else steps, float)
      for j, name in enumerate(names):
        matrix = np.array([[h[t][name]["mean"] for t in iterations]
                           for h in histories])
        if len(iterations) > 1:
          plot_band(axes[i, j], x, matrix, method.label, f"C{k}")
        else:
          plot_level(axes[i, j], matrix[:, 0], method.label, f"C{k}")
  return finish(figure, axes, path)


def exposure(runs: Sequence[comparison.ComparisonRun], output_dir: pathlib.Path,
             path: pathlib.Path) -> pathlib.Path:
  """How fast each method narrows a session's categories (the filter
  bubble), from the final evaluation's `exposure_curve`, and how many
  sessions are still running at each step.

  The narrowing panels stop where fewer than MIN_ACTIVE_SHARE of a seed's
  sessions are still running."""
  panels = (("category_coverage", "distinct categories so far"),
            ("majority_category_share", "majority-category share so far"),
            ("active_share", "share of sessions still running"))
  conditions, methods = layout(runs)
  figure, axes = new_figure(len(conditions), len(panels))
  for i, condition in enumerate(conditions):
    for j, (_, title) in enumerate(panels):
      axes[i, j].set(title=f"{condition[0]} / {condition[1]}",
                     xlabel="step in session", ylabel=title)
    for k, method in enumerate(methods):
      curves = [s["exposure_curve"] for s in
                (comparison.read_summary(r.directory(output_dir))
                 for r in seeds_of(runs, condition, method))
                if s is not None and "exposure_curve" in s]
      if not curves:
        continue
      # Narrowing is drawn while every seed has at least MIN_ACTIVE_SHARE of
      # its sessions running: the last few sessions' average is noise.
      common = min(sum(a >= MIN_ACTIVE_SHARE * c["active_sessions"][0]
                       for a in c["active_sessions"]) for c in curves)
      longest = max(len(c["step"]) for c in curves)
      for j, (key, _) in enumerate(panels[:2]):
        matrix = np.array([c[key][:common] for c in curves])
        plot_band(axes[i, j], np.arange(1, common + 1), matrix, method.label,
                  f"C{k}")
      active = np.zeros((len(curves), longest))
      for row, curve in enumerate(curves):
        counts = np.asarray(curve["active_sessions"], float)
        active[row, :len(counts)] = counts / counts[0]
      plot_band(axes[i, 2], np.arange(1, longest + 1), active, method.label,
                f"C{k}")
  return finish(figure, axes, path)


def table_bars(rows: Sequence[comparison.Row], path: pathlib.Path) -> pathlib.Path:
  """The final table as bars (mean) with CI95 error bars, one panel per
  (condition, column)."""
  conditions = list(dict.fromkeys((r.scenario, r.exit_rule) for r in rows))
  figure, axes = new_figure(len(conditions), len(comparison.COLUMNS),
                            width=3.2, height=3.4)
  for i, condition in enumerate(conditions):
    members = [r for r in rows if (r.scenario, r.exit_rule) == condition]
    for j, column in enumerate(comparison.COLUMNS):
      panel = axes[i, j]
      means = np.array([r.stats[column.key]["mean"] for r in members])
      errors = np.nan_to_num(
          np.array([r.stats[column.key]["ci95"] for r in members]))
      positions = np.arange(len(members))
      panel.bar(positions, np.nan_to_num(means), yerr=errors, capsize=3,
                color=[f"C{k}" for k in range(len(members))])
      panel.set_xticks(positions, [r.method.label for r in members],
                       rotation=60, ha="right", fontsize=7)
      direction = "↑" if column.higher_is_better else "↓"
      panel.set_title(f"{column.title} {direction}", fontsize=9)
      if j == 0:
        panel.set_ylabel(f"{condition[0]} / {condition[1]}", fontsize=8)
      if not np.isfinite(means).any():
        panel.text(0.5, 0.5, "n/a", transform=panel.transAxes, ha="center")
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=100)
  return path


def write_all(runs: Sequence[comparison.ComparisonRun],
              rows: Sequence[comparison.Row], output_dir: pathlib.Path,
              results_dir: pathlib.Path) -> list[pathlib.Path]:
  """All three figures as PNG files in `results_dir`."""
  return [learning_curves(runs, output_dir, results_dir / "learning_curves.png"),
          exposure(runs, output_dir, results_dir / "category_exposure.png"),
          table_bars(rows, results_dir / "results_bars.png")]
