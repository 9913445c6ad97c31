"""What the planner knows per situation: answers kept, failures backing off.

A situation's answer (a validated plan, category scores, or a reply that
failed validation) is kept in process memory, oldest out first, and answers
the situation again without a request. A request that failed (the server
erred, hung or could not be reached) is not asked again until a back-off
has passed, doubling with each failure in a row.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Mapping

from lerl_recsim.planner.chain import ANSWER_CAUSES, Fallback, fallback_cause
from lerl_recsim.planner.likelihood import CategoryScores

_log = logging.getLogger(__name__)

Answer = tuple[int, ...] | CategoryScores | Fallback


class SituationAnswers:
  """Answers by situation key, and the back-off of failed situations.

  Args:
    memo_size: Situations whose answer is kept (oldest out first).
    retry_backoff_s, max_backoff_s: A failed situation is not asked for
      retry_backoff_s, doubling with each further failure up to
      max_backoff_s.
  """

  def __init__(self, memo_size: int, retry_backoff_s: float,
               max_backoff_s: float) -> None:
    self.memo_size = memo_size
    self.retry_backoff_s = retry_backoff_s
    self.max_backoff_s = max_backoff_s
    self._memo: collections.OrderedDict[Any, Answer] = (
        collections.OrderedDict())
    # Situations whose last request failed: their users' fallback (not
    # asked again until its retry_at) and the failures in a row.
    self._failures: dict[Any, tuple[Fallback, int]] = {}

  def known(self, key: Any) -> Answer | None:
    """The kept answer for `key`, else None."""
    return self._memo.get(key)

  def backing_off(self, key: Any) -> Fallback | None:
    """The fallback for `key` while its back-off lasts, else None."""
    fallback, _ = self._failures.get(key, (None, 0))
    if fallback is None or time.monotonic() >= fallback.retry_at:
      return None
    return fallback

  def failed_before(self, key: Any) -> bool:
    """Whether `key`'s last request failed (asking it now is a retry)."""
    return key in self._failures

  @property
  def failing(self) -> int:
    """Situations backing off or due a retry after a failure."""
    return len(self._failures)

  def take(self, key: Any, result: Any) -> Answer:
    """A request's result for `key`: kept if an answer, else recorded as a
    failure; returns the answer or its users' fallback."""
    if isinstance(result, BaseException):
      return self._record_failure(key, result)
    self._failures.pop(key, None)
    self._keep(key, result)
    return result

  def _record_failure(self, key: Any, error: BaseException) -> Fallback:
    cause = fallback_cause(error)
    _log.debug("planner request failed (%s): %s", cause, error)
    if cause == "wait_budget":  # not the situation's fault: ask it next time
      return Fallback(cause)
    if cause in ANSWER_CAUSES:  # the model's answer: kept, not asked again
      fallback = Fallback(cause)
      self._keep(key, fallback)
      return fallback
    attempts = self._failures.get(key, (None, 0))[1] + 1
    delay = min(self.max_backoff_s,
                self.retry_backoff_s * 2.0 ** (attempts - 1))
    fallback = Fallback(cause, time.monotonic() + delay)
    self._failures[key] = (fallback, attempts)
    return fallback

  def _keep(self, key: Any, answer: Answer) -> None:
    self._memo[key] = answer
    if len(self._memo) > self.memo_size:
      self._memo.popitem(last=False)

  def without_failures(self) -> SituationAnswers:
    """A view sharing the kept answers, with failures of its own."""
    view = SituationAnswers(self.memo_size, self.retry_backoff_s,
                            self.max_backoff_s)
    view._memo = self._memo
    return view

  def saved_state(self) -> list[Any]:
    """The kept answers as JSON values (failures are not kept: a resumed
    run asks those situations again)."""
    return [[[list(item) for item in prompt], sorted(blocked),
             list(answer) if isinstance(answer, tuple)
             else {"scores": list(answer.probabilities)}
             if isinstance(answer, CategoryScores)
             else {"fallback": answer.cause}]
            for (prompt, blocked), answer in self._memo.items()]

  def load_saved_state(self, state: list[Any]) -> None:
    """Replaces the kept answers with `saved_state`'s (views see them)."""
    self._memo.clear()
    for prompt, blocked, answer in state:
      key = (tuple(tuple(item) for item in prompt), frozenset(blocked))
      self._memo[key] = (tuple(answer) if isinstance(answer, list)
                         else CategoryScores(tuple(answer["scores"]))
                         if isinstance(answer, Mapping) and "scores" in answer
                         else Fallback(answer["fallback"]))
