"""What the planner sees of one user: category-level steps and session totals.

The planner works on categories, not items, so the environment reduces each
step to the categories it showed and how the user responded; that keeps the
prompt short and lets equal situations look equal.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StepRecord:
  """One recommendation step.

  Attributes:
    categories: Category ids of the items shown at this step (a slate may hold
      several items, and an item several categories; repeats are allowed).
    engagement: The user's response at this step (for example watch time or
      the slate's summed reward), in the environment's own units.
    clicked: Whether the user consumed anything at this step.
  """

  categories: tuple[int, ...]
  engagement: float
  clicked: bool

  def __post_init__(self) -> None:
    object.__setattr__(self, "categories", tuple(int(c) for c in self.categories))
    object.__setattr__(self, "engagement", float(self.engagement))
    object.__setattr__(self, "clicked", bool(self.clicked))


@dataclasses.dataclass(frozen=True)
class UserHistory:
  """One user's session so far (or, for a reflection, the finished session).

  Attributes:
    steps: The recent steps, most recent last. The environment may keep only
      a window; `session_length` still counts every step.
    session_length: Steps taken in this session so far.
    cumulative_reward: Reward collected in this session so far.
  """

  steps: tuple[StepRecord, ...] = ()
  session_length: int = 0
  cumulative_reward: float = 0.0

  def __post_init__(self) -> None:
    object.__setattr__(self, "steps", tuple(self.steps))
    if self.session_length < len(self.steps):
      raise ValueError(
          f"session_length {self.session_length} is shorter than the "
          f"{len(self.steps)} steps given; expected at least {len(self.steps)}.")

  def recent(self, window: int) -> tuple[StepRecord, ...]:
    """The last `window` steps (all of them when there are fewer)."""
    return self.steps[-window:] if window > 0 else ()


def history_to_json(history: UserHistory) -> dict:
  """A history as JSON values (for a run's saved planner state)."""
  return {"steps": [[list(step.categories), step.engagement, step.clicked]
                    for step in history.steps],
          "session_length": history.session_length,
          "cumulative_reward": history.cumulative_reward}


def history_from_json(data: dict) -> UserHistory:
  return UserHistory(tuple(StepRecord(tuple(c), e, k)
                           for c, e, k in data["steps"]),
                     data["session_length"], data["cumulative_reward"])
