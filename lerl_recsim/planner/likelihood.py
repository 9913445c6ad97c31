"""Asking a model to score categories instead of writing a plan.

A small model writes poor lists: it repeats names and leans towards the
first ones listed. The probability it gives each name as the first item of
its plan is a score for every category, and any choice of the best-scored
categories is a valid plan. The probabilities are read from the model's
log-probabilities: the answer `{"categories": ["` is continued one token at
a time, and a token that several names share is followed further (a token
trie walked most probable first), so no tokenizer is needed and a name
counts whatever tokens it is spelled with.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any, Sequence

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable

from lerl_recsim.planner.validation import InvalidPlan, PlanParseError

# What the model's answer starts with; the scores are those of the next name.
ANSWER_PREFIX = '{"categories": ["'


@dataclasses.dataclass(frozen=True)
class CategoryScores:
  """The model's probability of naming each category (by id) first."""

  probabilities: tuple[float, ...]

  def plan(self, shortlist: Sequence[int], size: int) -> tuple[int, ...]:
    """The `size` best-scored categories of `shortlist`, best first; equal
    scores keep the shortlist's order."""
    ranked = sorted(shortlist, key=lambda c: -self.probabilities[c])
    return tuple(ranked[:size])


def preference_row(scores: CategoryScores) -> np.ndarray:
  """int32 [C]: per category, how many categories score strictly lower, so
  that sorting by it orders as the probabilities do, ties included (the
  TensorFlow planned environment's table stores it)."""
  p = np.asarray(scores.probabilities)
  return (p[None, :] < p[:, None]).sum(axis=1).astype(np.int32)


def top_tokens(reply: Any, top_logprobs: int) -> list[tuple[str, float]]:
  """(token, log-probability) pairs of the reply's first token position.

  The model's output is untrusted: a reply without log-probabilities, or
  with values that are not log-probabilities, is a parse error.
  """
  metadata = getattr(reply, "response_metadata", None) or {}
  try:
    candidates = metadata["logprobs"]["content"][0]["top_logprobs"]
  except (KeyError, IndexError, TypeError):
    raise PlanParseError(
        "the reply has no log-probabilities; answer='likelihood' needs a "
        "backend that reports them and continues an assistant message "
        "(embedded, gguf:PATH)") from None
  pairs = []
  for candidate in list(candidates)[:top_logprobs]:
    token = candidate.get("token") if isinstance(candidate, dict) else None
    logprob = candidate.get("logprob") if isinstance(candidate, dict) else None
    if (not isinstance(token, str) or isinstance(logprob, bool)
        or not isinstance(logprob, (int, float))
        or not -math.inf <= logprob <= 1e-6):
      raise PlanParseError(
          f"log-probability entry {str(candidate)[:80]!r}; expected "
          "{'token': str, 'logprob': number <= 0}")
    pairs.append((token, float(logprob)))
  return pairs


def first_name_probabilities(model: BaseChatModel | Runnable,
                             messages: Sequence[BaseMessage],
                             names: Sequence[str], *, top_logprobs: int = 20,
                             min_probability: float = 1e-3,
                             max_requests: int = 16) -> np.ndarray:
  """Per name, the probability that the model's answer names it first.

  Names match ignoring case. A token sequence only one name continues
  counts for that name; one several names share is followed further while
  its probability is at least `min_probability`, in at most `max_requests`
  requests, each of one token, most probable prefix first. Probability the
  walk does not reach (tokens outside the top `top_logprobs`, prefixes cut
  off) is left out, so the values are lower bounds.
  """
  targets = [name.casefold() + '"' for name in names]
  bound = model.bind(logprobs=True, top_logprobs=top_logprobs, max_tokens=1)
  mass = np.zeros(len(names))
  frontier: list[tuple[float, str]] = [(-1.0, "")]
  for _ in range(max_requests):
    if not frontier:
      break
    negative, prefix = heapq.heappop(frontier)
    reply = bound.invoke([*messages, AIMessage(content=ANSWER_PREFIX + prefix)])
    for token, logprob in top_tokens(reply, top_logprobs):
      text = (prefix + token).casefold()
      probability = -negative * math.exp(logprob)
      complete = [i for i, t in enumerate(targets) if text.startswith(t)]
      started = [i for i, t in enumerate(targets) if t.startswith(text)]
      if complete or len(started) == 1:
        for i in complete or started:
          mass[i] += probability / len(complete or started)
      elif started and probability >= min_probability:
        heapq.heappush(frontier, (-probability, prefix + token))
  return mass


def scores_from_probabilities(probabilities: np.ndarray) -> CategoryScores:
  """Validated scores: a reply that gave no name any probability says
  nothing about the categories and is an invalid plan."""
  if not np.all(np.isfinite(probabilities)) or probabilities.sum() <= 0:
    raise InvalidPlan(
        "the model gave no catalogue name any probability among its first "
        "tokens; expected it to start its plan with a category")
  return CategoryScores(tuple(float(p) for p in probabilities))
