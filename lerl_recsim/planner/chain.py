"""The plan request as a LangChain runnable, and how its failures count.

`plan_chain` turns one user's prompt input into a validated plan (or the
situation's category scores); `fallback_cause` names why a request gave no
plan. The planner (`planner.py`) decides which situations to ask and what to
do with the answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from typing import Any, Callable

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import (Runnable, RunnableConfig,
                                      RunnableLambda, RunnablePassthrough)

from lerl_recsim.planner import backends
from lerl_recsim.planner.chat_models import LlamaCppChatModel
from lerl_recsim.planner.likelihood import (CategoryScores,
                                            first_name_probabilities,
                                            scores_from_probabilities)
from lerl_recsim.planner.prompt import plan_prompt, plan_schema
from lerl_recsim.planner.validation import (InvalidPlan, PlanParseError,
                                            PlanRules, parse_plan_output,
                                            saturated, validate_plan)
from lerl_recsim.scenarios.catalogue import Catalogue

# Why a user got the heuristic plan instead of the LLM's: an unreadable
# reply, a plan that breaks the rules, the server answering with an HTTP
# error or an unreadable response, the connection failing, a request taking
# too long, any other error, or evaluation's total waiting time being spent
# (`start_wait_budget`).
FALLBACK_CAUSES = ("parse_error", "invalid_plan", "server_error", "connection",
                   "timeout", "exception", "wait_budget")


class WaitBudgetSpent(TimeoutError):
  """The evaluation's total time for waiting on the LLM has passed."""


def fallback_cause(error: BaseException) -> str:
  """Which of FALLBACK_CAUSES an error from the chain counts as.

  HTTP clients are recognised by their exceptions' names and attributes, so
  that no optional client package needs importing here.
  """
  if isinstance(error, PlanParseError):
    return "parse_error"
  if isinstance(error, InvalidPlan):
    return "invalid_plan"
  if isinstance(error, WaitBudgetSpent):
    return "wait_budget"
  names = [type(error).__name__.lower()] + [
      c.__name__.lower() for c in type(error).__mro__[1:]]
  if isinstance(error, TimeoutError) or "timeout" in names[0]:
    return "timeout"
  if (getattr(error, "status_code", None) is not None
      or isinstance(error, json.JSONDecodeError)
      or any("statuserror" in n for n in names)):
    return "server_error"
  if isinstance(error, ConnectionError) or any(
      n in ("apiconnectionerror", "transporterror", "connecterror",
            "remoteprotocolerror", "networkerror") for n in names):
    return "connection"
  return "exception"


# Causes that are the model's answer rather than a failed request.
ANSWER_CAUSES = ("parse_error", "invalid_plan")


@dataclasses.dataclass(frozen=True)
class Fallback:
  """A user without the LLM's plan: why, and when its situation may be
  asked again (monotonic seconds; None: never, for a reply that failed
  validation, or at its next request, for a spent wait budget)."""
  cause: str
  retry_at: float | None = None


def call_with_timeout(fn: Callable[[], Any], timeout_s: float) -> Any:
  """fn() on a daemon thread; TimeoutError if it has not returned in time.

  A thread cannot be stopped, so a timed-out call runs on in the background
  and its result is dropped; the daemon flag keeps it from blocking exit.
  """
  box: dict[str, Any] = {}
  done = threading.Event()

  def target() -> None:
    try:
      box["value"] = fn()
    except BaseException as e:  # Handed to the caller below.
      box["error"] = e
    finally:
      done.set()

  threading.Thread(target=target, daemon=True, name="lerl-planner").start()
  if not done.wait(timeout_s):
    raise TimeoutError(f"the LLM call took longer than {timeout_s} s")
  if "error" in box:
    raise box["error"]
  return box["value"]


def plan_chain(model: BaseChatModel | Runnable, catalogue: Catalogue,
               rules: PlanRules, answer: str = "list") -> Runnable:
  """{"prompt": prompt variables, "history": UserHistory, "choices": the
  shortlist or None} -> category ids, or with answer="likelihood" the
  situation's `CategoryScores` (see `likelihood_chain`).

  The model is bound to the plan schema (the shortlist, without the user's
  saturated categories) where the backend supports it; the reply is then
  parsed and validated in code, a name off the shortlist included.
  """
  if answer == "likelihood":
    return likelihood_chain(model, catalogue, rules)
  prompt = plan_prompt(catalogue, rules)

  def ask(inputs: dict[str, Any], config: RunnableConfig) -> Any:
    blocked = (saturated(inputs["history"], rules) if rules.exclude_saturated
               else frozenset())
    schema = plan_schema(catalogue, rules, exclude=blocked,
                         choices=inputs.get("choices"))
    messages = prompt.invoke(inputs["prompt"], config)
    return backends.constrain(model, schema).invoke(messages, config)

  reply = (RunnableLambda(ask)
           | RunnableLambda(lambda m: parse_plan_output(m.content,
                                                        rules.max_output_chars)))
  return (RunnablePassthrough.assign(items=reply)
          | RunnableLambda(lambda d: validate_plan(
              d["items"], catalogue, d["history"], rules, d.get("choices"))))


def likelihood_chain(model: BaseChatModel | Runnable, catalogue: Catalogue,
                     rules: PlanRules) -> Runnable:
  """The plan prompt's input -> `CategoryScores`: the probability of each
  category being the first the model names (`planner.likelihood`). Every
  choice of the best-scored categories is a valid plan, so nothing the model
  writes can break the rules."""
  prompt = plan_prompt(catalogue, rules)
  # A local model answers one request at a time from one prompt cache: a
  # situation's requests in a row reuse its prompt, interleaved with another
  # situation's (of this chain or of another planner view's) they would
  # evaluate it again each time.
  one_at_a_time = (model.exclusive() if isinstance(model, LlamaCppChatModel)
                   else contextlib.nullcontext())

  def score(inputs: dict[str, Any], config: RunnableConfig) -> CategoryScores:
    messages = prompt.invoke(inputs["prompt"], config).to_messages()
    with one_at_a_time:
      probabilities = first_name_probabilities(model, messages,
                                               catalogue.category_names)
    return scores_from_probabilities(probabilities)

  return RunnableLambda(score)
