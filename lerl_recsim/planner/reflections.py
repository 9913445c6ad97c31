"""Reflection memory: short lessons about finished sessions, reused in prompts.

LERL writes a lesson when a session ends and samples stored lessons into later
prompts with probability proportional to exp(beta * cumulative reward), so
lessons from good sessions are seen more often. Unlike LERL's public code, the
lesson is written from the session that ended, not from the history of the
user who replaced it. A lesson is model output, so it is cleaned and capped
before it can reach another prompt.
"""

from __future__ import annotations

import collections
import hashlib
import dataclasses
import os
import re
from typing import Mapping, Sequence

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

from lerl_recsim import results
from lerl_recsim.planner.history import UserHistory
from lerl_recsim.planner.prompt import PromptConfig, steps_text, totals_text
from lerl_recsim.scenarios.catalogue import Catalogue

_FORMAT = "lerl-recsim/reflections/1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidReflection(ValueError):
  """The reflection model's reply held no usable lesson."""


def clean_lesson(text: str, max_chars: int = 300) -> str:
  """One line of plain text, at most `max_chars` long, cut at a word boundary.

  Line breaks and control characters go, so a lesson cannot pose as another
  section of the prompt it is pasted into.
  """
  text = " ".join(_CONTROL.sub(" ", str(text)).split()).strip(" \"'`")
  if len(text) > max_chars:
    text = text[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") or text[:max_chars]
  if not text:
    raise InvalidReflection("the reflection reply is empty")
  return text


@dataclasses.dataclass(frozen=True)
class Reflection:
  """A lesson, its session's cumulative reward, and a pool-wide id.

  The id fixes the lesson's random key in `ReflectionPool.draw`; it is saved
  with the pool so that a reloaded pool draws as the original did.
  """

  lesson: str
  cumulative_reward: float
  uid: int = dataclasses.field(default=0, compare=False)


def _uniform(key: str) -> float:
  """A number in (0, 1) that depends only on `key`."""
  digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
  return (int.from_bytes(digest, "little") + 0.5) / 2.0**64


class ReflectionPool:
  """A bounded pool of lessons; the oldest lesson leaves when it is full."""

  def __init__(self, capacity: int = 100, beta: float = 0.1) -> None:
    if capacity < 1:
      raise ValueError(f"capacity must be >= 1, got {capacity}")
    self.capacity = capacity
    self.beta = beta
    self._entries: collections.deque[Reflection] = collections.deque(
        maxlen=capacity)
    self._next_uid = 0

  def __len__(self) -> int:
    return len(self._entries)

  @property
  def entries(self) -> tuple[Reflection, ...]:
    return tuple(self._entries)

  def add(self, lesson: str, cumulative_reward: float,
          uid: int | None = None) -> None:
    uid = self._next_uid if uid is None else int(uid)
    self._next_uid = max(self._next_uid, uid + 1)
    self._entries.append(
        Reflection(clean_lesson(lesson), float(cumulative_reward), uid))

  def probabilities(self) -> np.ndarray:
    """P(lesson i is drawn first) ∝ exp(beta * cumulative reward_i)."""
    rewards = np.array([e.cumulative_reward for e in self._entries])
    weights = np.exp(self.beta * (rewards - rewards.max()))
    return weights / weights.sum()

  def sample(self, k: int, rng: np.random.Generator) -> list[str]:
    """`k` distinct lessons drawn in turn ∝ exp(beta * reward) (all if fewer)."""
    if k <= 0 or not self._entries:
      return []
    if k >= len(self._entries):
      return [e.lesson for e in self._entries]
    chosen = rng.choice(len(self._entries), size=k, replace=False,
                        p=self.probabilities())
    return [self._entries[i].lesson for i in chosen]

  def draw(self, k: int, key: str) -> list[str]:
    """`k` distinct lessons for the situation `key`, best-scored first.

    The same law as `sample` (successive draws ∝ exp(beta * reward)) by the
    Gumbel-top-k trick, but each lesson's Gumbel noise is a function of
    (`key`, its uid) rather than of an RNG stream. Equal keys thus draw the
    same lessons, and adding or evicting one lesson changes only the draws it
    enters or leaves, so most cached prompts stay valid as the pool grows.
    """
    if k <= 0 or not self._entries:
      return []
    scores = [self.beta * e.cumulative_reward
              - np.log(-np.log(_uniform(f"{key}\x1f{e.uid}")))
              for e in self._entries]
    best = np.argsort(scores, kind="stable")[::-1][:k]
    return [self._entries[i].lesson for i in best]

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the pool atomically (`results.write_json_atomic`): never
    half-written, and a failed write leaves the saved pool as it was."""
    results.write_json_atomic(path, {
        "format": _FORMAT, "capacity": self.capacity, "beta": self.beta,
        "entries": [dataclasses.asdict(e) for e in self._entries]})

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> "ReflectionPool":
    """The pool saved at `path`; DamagedFileError if it cannot be read."""
    remedy = ("remove it to go on with an empty pool (its lessons are lost), "
              "or put back a saved copy")
    data = results.read_json(path, remedy)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
      raise results.DamagedFileError(
          path, f"not a reflection pool: expected a JSON object with format "
          f"{_FORMAT!r}", remedy)
    try:
      pool = cls(capacity=int(data["capacity"]), beta=float(data["beta"]))
      for entry in data["entries"]:
        pool.add(entry["lesson"], entry["cumulative_reward"], entry.get("uid"))
    except (KeyError, TypeError, ValueError) as error:
      raise results.DamagedFileError(
          path, f"an entry is malformed: {error!r}", remedy) from None
    return pool


class LessonSchedule:
  """Which finished sessions get a lesson: the `reflect_every`-th, then ones
  at gaps that grow by the factor `reflect_growth` (16 and 1.25: sessions
  16, 36, 61, 93, ...). (1, 1.0) is LERL, a lesson about every session.
  Sparser lessons keep their cost (one uncached request each) and the
  prompt changes they cause rare, so the LLM cache keeps answering in long
  runs."""

  def __init__(self, reflect_every: int = 1, reflect_growth: float = 1.0):
    if isinstance(reflect_every, bool) or not isinstance(reflect_every, int) \
        or reflect_every < 1:
      raise ValueError(f"reflect_every must be an int >= 1, got {reflect_every!r}")
    if not reflect_growth >= 1.0:
      raise ValueError(f"reflect_growth must be >= 1, got {reflect_growth!r}")
    self.growth = float(reflect_growth)
    self.gap = float(reflect_every)
    self.next_session = float(reflect_every)

  def due(self, session: int) -> bool:
    """Whether finished session number `session` (from 1, asked in order)
    gets a lesson."""
    if session < self.next_session:
      return False
    self.gap *= self.growth
    self.next_session += self.gap
    return True

  def saved_state(self) -> dict[str, float]:
    """Where the schedule stands, as JSON values (a resumed run goes on)."""
    return {"reflection_gap": self.gap, "next_reflection": self.next_session}

  def load_saved_state(self, state: Mapping[str, float]) -> None:
    self.gap = float(state["reflection_gap"])
    self.next_session = float(state["next_reflection"])


def reflection_prompt() -> ChatPromptTemplate:
  """Fixed instructions first; the finished session (`session`) last."""
  return ChatPromptTemplate.from_messages([
      SystemMessage(content=(
          "You review finished sessions of a recommender system. Write one "
          "short lesson (at most two sentences) about how the categories "
          "shown, and how often they were repeated, affected this user's "
          "engagement and how long the user stayed. The lesson will guide "
          "the planning of future sessions. Plain text only.")),
      ("human", "Finished session, oldest step first:\n{session}"),
  ])


def session_text(history: UserHistory, catalogue: Catalogue,
                 config: PromptConfig, window: int) -> str:
  """The finished session as prompt text: its last `window` steps and totals."""
  return (steps_text(history.recent(window), catalogue, config) + "\n"
          + totals_text(history, config) + " The user left.")


def reflection_chain(model: BaseChatModel | Runnable, catalogue: Catalogue,
                     config: PromptConfig = PromptConfig(), window: int = 20,
                     max_chars: int = 300) -> Runnable:
  """UserHistory of a finished session -> a cleaned one-line lesson."""
  def variables(history: UserHistory) -> dict[str, str]:
    return {"session": session_text(history, catalogue, config, window)}
  return (RunnableLambda(variables) | reflection_prompt() | model
          | StrOutputParser()
          | RunnableLambda(lambda text: clean_lesson(text, max_chars)))


def sample_pool_for(pool: ReflectionPool, k: int, seed: int,
                    key: Sequence[str]) -> list[str]:
  """Lessons for one prompt, drawn with noise fixed by the situation.

  Equal situations draw the same lessons, so their prompts stay equal and the
  LLM cache can answer them (see `ReflectionPool.draw`).
  """
  return pool.draw(k, "\x1f".join([str(seed), *key]))
