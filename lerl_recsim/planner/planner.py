"""The LLM planner: history -> prompt -> model -> validated plan, never failing.

Many users are planned in one batch call. Whatever goes wrong with the model
(unreadable or invalid reply, an exception, a timeout) the user gets the
heuristic plan instead and the cause is counted, so training never stops
because of the LLM.

Two ways to wait: `plan(..., wait=True)` asks the model and waits (runs
repeat exactly); `wait=False` answers from what the model has already said
and asks about new situations on a background thread, giving those users
the heuristic plan meanwhile (a provisional plan, counted), so training runs
at its own speed while the answers accumulate.

Every planned user counts once, in both modes: as the LLM's plan, as
provisional, or as a fallback by cause. A situation whose request failed
(the server erred, hung or could not be reached) is not asked again until a
back-off has passed (doubling with each failure), so a dead or hanging
server costs one failed request per situation and back-off, not one per
user. A reply that fails validation is the model's answer for its situation
(at temperature 0 it would give it again): it is kept like a plan, and its
users fall back without asking again.

The parts: the request itself is `chain.plan_chain`; answers kept and
failed situations backing off are `answers.SituationAnswers`; the LLM cache
is `caching`; requests not waited for go to `background.BackgroundWorker`;
lessons to `reflections.ReflectionPool`; every count is in
`counts.PlannerCounts`. The `Planner` decides, per batch of users, which of
them to ask about and what each gets.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
from langchain_core.caches import BaseCache
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from lerl_recsim.planner import backends
from lerl_recsim.planner.answers import SituationAnswers
from lerl_recsim.planner.background import BackgroundWorker
from lerl_recsim.planner.caching import CountingCache, make_cache
from lerl_recsim.planner.chain import (Fallback, WaitBudgetSpent,
                                       call_with_timeout, plan_chain)
from lerl_recsim.planner.chat_models import LlamaCppChatModel
from lerl_recsim.planner.counts import PlannerCounts
from lerl_recsim.planner.heuristic import HeuristicPlanner
from lerl_recsim.planner.history import UserHistory
from lerl_recsim.planner.likelihood import CategoryScores, preference_row
from lerl_recsim.planner.prompt import PromptConfig, reflections_text, situation
from lerl_recsim.planner.reflections import (LessonSchedule, ReflectionPool,
                                             reflection_chain, sample_pool_for)
from lerl_recsim.planner.situations import candidates_for
from lerl_recsim.planner.validation import PlanRules, saturated
from lerl_recsim.scenarios.catalogue import Catalogue, default_catalogue

_log = logging.getLogger(__name__)


class Planner:
  """Plans categories for many users with an LLM, and learns reflections.

  Args:
    model: Any LangChain chat model (see backends.make_chat_model).
    catalogue: The categories to choose from.
    rules: What a valid plan is; also used by the fallback.
    prompt_config: How histories are discretised into prompt text, and the
      shortlist the model chooses from (`PromptConfig.shortlist_size`).
    fallback: The plan used whenever the LLM fails; by default the heuristic.
    reflections: The lesson pool; None switches reflections off.
    reflection_k: Lessons sampled into each prompt.
    reflect_every, reflect_growth: Which finished sessions get a lesson
      (`reflections.LessonSchedule`; (1, 1.0), every session, is LERL).
    cache: LangChain cache for planner replies; by default in memory, or
      SQLite at `cache_path` (needs the `sqlite` extra) to survive restarts.
    timeout_s: Time allowed per request: a batch of n requests may take
      n * timeout_s (a local model answers one request at a time), after
      which its unanswered requests fall back.
    retry_backoff_s, max_backoff_s: A situation whose request failed gets
      the heuristic plan (a counted fallback) without asking for
      retry_backoff_s, doubling with each further failure up to
      max_backoff_s; then it is asked again.
    evaluation_wait_s: Total time an evaluation view may spend waiting for
      the model per evaluation (`start_wait_budget`); past it, its users
      fall back (cause `wait_budget`) instead of waiting.
    max_concurrency: Requests of a batch in flight at once.
    memo_size: Situations whose validated plan is kept in process memory
      (oldest out first); a hit there skips the chain and its overhead.
    max_pending: Background requests queued at most (`wait=False`).
    local_busy_share: Share of wall time a model that computes in this
      process (`LlamaCppChatModel`) may spend answering in the background
      once its answers cover most plans (see `hurry`): it would otherwise
      take cores the training needs. Remote models are not limited. (0.1
      and 0.25 gave the embedded model 98.2% of a cold run's training
      plans alike, in 1.58x and 1.71x `dqn`'s time; 0.05, 96.2% in 1.62x:
      docs/results/development.md.)
    seed: Seeds the reflection sampling and the default fallback.
  """

  def __init__(self, model: BaseChatModel, catalogue: Catalogue, *,
               rules: PlanRules = PlanRules(),
               prompt_config: PromptConfig = PromptConfig(),
               fallback: HeuristicPlanner | None = None,
               reflections: ReflectionPool | None = None,
               reflection_k: int = 2,
               reflect_every: int = 1,
               reflect_growth: float = 1.0,
               cache: BaseCache | None = None,
               cache_path: str | None = None,
               timeout_s: float = 60.0,
               retry_backoff_s: float = 1.0,
               max_backoff_s: float = 300.0,
               evaluation_wait_s: float = 900.0,
               max_concurrency: int = 4,
               memo_size: int = 100_000,
               max_pending: int = 256,
               local_busy_share: float = 0.1,
               seed: int = 0) -> None:
    rules.check_catalogue(catalogue)
    prompt_config.check_shortlist(catalogue, rules)
    self.lesson_schedule = LessonSchedule(reflect_every, reflect_growth)
    for name, value in (("timeout_s", timeout_s),
                        ("retry_backoff_s", retry_backoff_s),
                        ("max_backoff_s", max_backoff_s),
                        ("evaluation_wait_s", evaluation_wait_s)):
      if not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    self.catalogue = catalogue
    self.rules = rules
    self.prompt_config = prompt_config
    self.fallback = fallback or HeuristicPlanner(catalogue, rules, seed=seed)
    self.reflections = reflections
    self.reflection_k = reflection_k
    self.timeout_s = timeout_s
    self.evaluation_wait_s = evaluation_wait_s
    self.max_concurrency = max_concurrency
    self.max_pending = max_pending
    self.local_busy_share = local_busy_share
    self.seed = seed
    self._model = model
    self._reflect = reflection_chain(
        backends.shorten(model.model_copy(update={"cache": False}), 80),
        catalogue, prompt_config)
    self._writes_lessons = True
    # Local models load their weights on first use (once for all copies);
    # that must not count against a request's timeout.
    self._loaders = [model.load] if isinstance(model, LlamaCppChatModel) else []
    self._start_own_state(make_cache(cache, cache_path),
                          SituationAnswers(memo_size, retry_backoff_s,
                                           max_backoff_s))

  def _start_own_state(self, cache: BaseCache,
                       answers: SituationAnswers) -> None:
    """What a planner and each of its views keep apart: their counts (cache
    hits included, hence a plan chain per counting cache), their failed
    situations and their background queue."""
    self.cache = CountingCache(cache)
    plan_model = self._model.model_copy(update={"cache": self.cache})
    self._chain = plan_chain(plan_model, self.catalogue, self.rules,
                             self.prompt_config.answer)
    self.answers = answers
    self.counts = PlannerCounts()
    self._latencies: collections.deque[float] = collections.deque(maxlen=10_000)
    self._wait_deadline: float | None = None  # see start_wait_budget
    self._lessons_asked: dict[int, UserHistory] = {}  # in the background
    local = isinstance(self._model, LlamaCppChatModel)
    self._worker = BackgroundWorker(
        self._answer_requests, self.max_pending,
        batch_size=self.max_concurrency,
        busy_share=self.local_busy_share if local else 1.0)

  def evaluation_view(self) -> Planner:
    """A planner for evaluation that leaves this one's state as it is.

    The view plans with the same model (loaded once), LLM cache, in-process
    memo of plans, fallback and settings, and its prompts draw lessons from
    this planner's reflection pool (the same object: lessons written into it
    later show up too, a pool assigned to `reflections` later does not). It
    writes no lessons: evaluation sessions neither enter the pool nor cost
    lesson requests, so an evaluated policy is planned as training left it
    and evaluation users never shape training's prompts. Its counters
    (plans, cache hits, LLM calls, fallbacks, latency), its failed
    situations and its background queue are its own.
    """
    view = copy.copy(self)
    view._writes_lessons = False
    view._start_own_state(self.cache.inner, self.answers.without_failures())
    return view

  def _check(self, history: UserHistory) -> None:
    for step in history.steps:
      for c in step.categories:
        if not 0 <= c < self.catalogue.num_categories:
          raise ValueError(
              f"category id {c} in a history; expected ids in "
              f"[0, {self.catalogue.num_categories - 1}]")

  def prompt_inputs(self, histories: Sequence[UserHistory]
                    ) -> list[dict[str, Any]]:
    """The chain inputs, one per user: discretised prompt variables, the
    history and the shortlist (`choices`, None without one); shortlists
    come from one batched heuristic call."""
    for history in histories:
      self._check(history)
    inputs = []
    for history, candidates in zip(histories, candidates_for(
        self.fallback.batch, histories, self.prompt_config)):
      variables = situation(history, self.catalogue, self.rules,
                            self.prompt_config, candidates)
      lessons: list[str] = []
      if self.reflections is not None:
        lessons = sample_pool_for(self.reflections, self.reflection_k,
                                  self.seed,
                                  (variables["recent"], variables["stats"]))
      variables["reflections"] = reflections_text(lessons)
      inputs.append({"prompt": variables, "history": history,
                     "choices": None if candidates is None
                     else candidates.shortlist})
    return inputs

  def prompt_input(self, history: UserHistory) -> dict[str, Any]:
    """The chain input for one user (see `prompt_inputs`)."""
    return self.prompt_inputs([history])[0]

  def _prompt_key(self, prompt_input: Mapping[str, Any]) -> Any:
    return (tuple(sorted(prompt_input["prompt"].items())),
            saturated(prompt_input["history"], self.rules))

  def prompt_keys(self, histories: Sequence[UserHistory]) -> list[Any]:
    """What decides the LLM's answer for each user: its prompt (shortlist
    and reflections included) and its saturated categories. Equal keys,
    equal plans."""
    return [self._prompt_key(x) for x in self.prompt_inputs(histories)]

  def prompt_key(self, history: UserHistory) -> Any:
    """`prompt_keys` for one user."""
    return self.prompt_keys([history])[0]

  def start_wait_budget(self, seconds: float | None = None) -> None:
    """From now on, waiting calls (`wait=True`) wait for the model at most
    `seconds` in total (default `evaluation_wait_s`); users asked about
    after that fall back with cause `wait_budget`. Evaluation calls it
    before each evaluation, so a hanging server delays it by a bounded time.
    """
    seconds = self.evaluation_wait_s if seconds is None else seconds
    self._wait_deadline = time.monotonic() + seconds

  def _batch(self, chain: Runnable, inputs: list[Any]) -> list[Any]:
    """Per input a result or an exception; never raises for model trouble."""
    if not inputs:
      return []
    for load in self._loaders:  # once each; later calls return at once
      load()
    allowed = self.timeout_s * len(inputs)
    budget_left = (None if self._wait_deadline is None
                   else self._wait_deadline - time.monotonic())
    if budget_left is not None and budget_left <= 0:
      return [WaitBudgetSpent("the evaluation's time for waiting on the LLM "
                              "is spent")] * len(inputs)
    try:
      return call_with_timeout(
          lambda: chain.batch(inputs,
                              config={"max_concurrency": self.max_concurrency},
                              return_exceptions=True),
          allowed if budget_left is None else min(allowed, budget_left))
    except TimeoutError as e:
      if budget_left is not None and budget_left < allowed:
        e = WaitBudgetSpent("the evaluation's time for waiting on the LLM "
                            "ran out during a request")
      return [e] * len(inputs)
    except Exception as e:  # The whole batch failed.
      return [e] * len(inputs)

  def _answer_requests(self, requests: list[tuple[str, Any]]) -> list[Any]:
    """The background worker's batches: plan inputs and lesson histories."""
    results: list[Any] = [None] * len(requests)
    for kind, chain in (("plan", self._chain), ("lesson", self._reflect)):
      at = [i for i, (k, _) in enumerate(requests) if k == kind]
      for i, result in zip(at, self._batch(chain, [requests[i][1] for i in at])):
        results[i] = result
    return results

  def _collect_background(self) -> None:
    """Takes in what the background worker has answered since last time."""
    for (kind, key), result in self._worker.drain():
      self.counts.background_answers += 1
      if kind == "plan":
        self.answers.take(key, result)
      else:
        self._store_lesson(self._lessons_asked.pop(key), result)

  @property
  def model(self) -> BaseChatModel:
    """The chat model this planner asks."""
    return self._model

  def hurry(self, needed: bool) -> None:
    """Lets the background worker answer without rest while its answers
    are `needed` (the caller sees most plans miss them), else at most
    `local_busy_share` of the time. Resting saves training time only once
    the LLM's plans are the run's plans; before that, every answer a rest
    delays is a situation trained on under the heuristic's masks."""
    if isinstance(self._model, LlamaCppChatModel):
      self._worker.busy_share = 1.0 if needed else self.local_busy_share

  @property
  def background_pending(self) -> int:
    """Requests handed to the background worker and not answered yet."""
    return self._worker.pending

  def poll_background(self) -> int:
    """Takes in the background worker's answers; returns how many it has
    given so far (plans and lessons), so that a caller can tell whether
    asking again may find something new."""
    self._collect_background()
    return self.counts.background_answers

  def flush(self, timeout_s: float | None = None) -> bool:
    """Waits for the background requests and takes their answers in; False
    if `timeout_s` passed first."""
    done = self._worker.wait(timeout_s)
    self._collect_background()
    return done

  def cancel_background(self) -> None:
    """Drops the requests queued in the background; the batch in flight is
    answered as usual. A dropped plan is asked again when its situation
    comes back; a dropped lesson is lost, and counts in `reflections_dropped`.
    """
    for kind, key in self._worker.cancel():
      if kind == "lesson":
        del self._lessons_asked[key]
        self.counts.reflections_dropped += 1

  def close(self) -> None:
    """Stops the background thread after the batch in flight, taking its
    answers in; queued requests are dropped (see `cancel_background`)."""
    self.cancel_background()
    self._worker.close()
    self._collect_background()

  def plan(self, histories: Sequence[UserHistory],
           wait: bool = True) -> list[tuple[int, ...]]:
    """One plan (category ids) per history, from one batch call.

    Users in the same discretised situation share one request, and a
    situation already answered in this process is answered from memory
    without going through the chain (a cheap first-level cache). With
    `wait=False`, situations not answered yet are asked in the background
    and their users get the heuristic plan for now. A user without the
    LLM's plan gets the heuristic's (see `llm_plans` for how it counts).
    """
    answers = self.llm_plans(histories, wait)
    heuristic = [h for h, a in zip(histories, answers)
                 if not isinstance(a, tuple)]
    fallback = iter(self.fallback.plan(heuristic))
    return [a if isinstance(a, tuple) else next(fallback) for a in answers]

  def llm_plans(self, histories: Sequence[UserHistory], wait: bool = True
                ) -> list[tuple[int, ...] | Fallback | None]:
    """Per history the LLM's validated plan; a `Fallback` where the request
    failed (or its situation is backing off after a failure); None where
    the answer is still coming (background). See `llm_answers`."""
    answers = self.llm_answers(histories, wait)
    scored = [i for i, a in enumerate(answers) if isinstance(a, CategoryScores)]
    plans: list[Any] = list(answers)
    for i, plan in zip(scored, self.plans_from_scores(
        [answers[i] for i in scored], [histories[i] for i in scored])):
      plans[i] = plan
    return plans

  def llm_answers(self, histories: Sequence[UserHistory], wait: bool = True
                  ) -> list[tuple[int, ...] | CategoryScores | Fallback | None]:
    """Per history its situation's answer: the validated plan, or with
    answer="likelihood" the category scores (`plans_from_scores` makes each
    user's plan of them); a `Fallback` where the request failed (or its
    situation is backing off after a failure); None where the answer is
    still coming (background).

    Each user counts once: in `llm_plans`, `provisional_plans` (None) or
    `fallback_<cause>`. Callers that compute the heuristic themselves (the
    TensorFlow planned environment) use this instead of `plan`.
    """
    start = time.perf_counter()
    self._collect_background()
    inputs = self.prompt_inputs(histories)
    keys = [self._prompt_key(x) for x in inputs]
    unique = list(dict.fromkeys(keys))
    answers: dict[Any, Any] = {}
    for key in unique:
      if (known := self.answers.known(key)) is not None:
        answers[key] = known
        self.counts.memo_hits += 1
      elif (held := self.answers.backing_off(key)) is not None:
        answers[key] = held
    ask = [k for k in unique if k not in answers]
    first = {key: inputs[keys.index(key)] for key in ask}
    self.counts.retry_requests += sum(map(self.answers.failed_before, ask))
    if wait:
      for key, result in zip(ask, self._batch(self._chain,
                                              [first[k] for k in ask])):
        answers[key] = self.answers.take(key, result)
    else:
      for key in ask:
        self._worker.submit(("plan", key), ("plan", first[key]))
        answers[key] = None  # provisional
    plans: list[tuple[int, ...] | CategoryScores | Fallback | None] = []
    for key in keys:
      result = answers[key]
      if result is None:
        self.counts.provisional_plans += 1
      elif isinstance(result, Fallback):
        self.counts.fallbacks[result.cause] += 1
      else:
        self.counts.llm_plans += 1
      plans.append(result)
    self.counts.plan_batches += 1
    self.counts.planned_users += len(histories)
    self.counts.shared_requests += len(histories) - len(unique)
    self._latencies.append(time.perf_counter() - start)
    return plans

  def plans_from_scores(self, scores: Sequence[CategoryScores],
                        histories: Sequence[UserHistory]
                        ) -> list[tuple[int, ...]]:
    """Each user's plan from its situation's scores: the best-scored
    `max_categories` of the heuristic's first `score_shortlist` picks for
    the user, saturated ones left out, best first."""
    if not histories:
      return []
    return self.fallback.preferred(
        histories, np.stack([preference_row(s) for s in scores]),
        self.prompt_config.score_shortlist, self.rules.max_categories)

  def saved_state(self) -> dict[str, Any]:
    """The state a resumed run needs, as JSON values: counters (LLM cache
    hits included), the lesson schedule and the plans in memory. Lessons
    still queued in the background are counted as dropped in the state, as
    a run killed after it was saved loses them. Failed situations are not
    kept: a resumed run asks them again."""
    counts = dataclasses.replace(self.counts)
    counts.reflections_dropped += len(self._lessons_asked)
    return {"counts": counts.as_json(), "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            **self.lesson_schedule.saved_state(),
            "memo": self.answers.saved_state()}

  def load_saved_state(self, state: Mapping[str, Any]) -> None:
    """Restores `saved_state` into this planner (its evaluation views share
    the plans in memory)."""
    self.counts = PlannerCounts.from_json(state["counts"])
    self.cache.hits, self.cache.misses = (state["cache_hits"],
                                          state["cache_misses"])
    self.lesson_schedule.load_saved_state(state)
    self.answers.load_saved_state(state["memo"])

  def _due_for_lesson(self) -> bool:
    """Counts one finished session; True when the schedule writes its lesson."""
    self.counts.reflection_sessions += 1
    return self.lesson_schedule.due(self.counts.reflection_sessions)

  @property
  def writes_lessons(self) -> bool:
    """Whether `end_sessions` uses the histories it is given (a planner
    with a pool, not an evaluation view): callers may skip building them."""
    return self.reflections is not None and self._writes_lessons

  def end_sessions(self, histories: Sequence[UserHistory],
                   wait: bool = True) -> None:
    """Writes lessons about finished sessions into the pool, as scheduled.

    `histories` must be the sessions that ended (not their successors'); each
    lesson is stored with its own session's cumulative reward. Which sessions
    get a lesson follows `reflect_every`/`reflect_growth`. With `wait=False`
    the lessons are written in the background (dropped when its queue is
    full or the planner closes first, and counted). An evaluation view
    writes none.
    """
    if not self.writes_lessons:
      return
    for h in histories:
      self._check(h)
    chosen = [h for h in histories if self._due_for_lesson()]
    if wait:
      self.counts.reflections_scheduled += len(chosen)
      for history, lesson in zip(chosen, self._batch(self._reflect, chosen)):
        self._store_lesson(history, lesson)
      return
    for history in chosen:
      number = self.counts.reflections_scheduled
      self.counts.reflections_scheduled += 1
      if self._worker.submit(("lesson", number), ("lesson", history)):
        self._lessons_asked[number] = history
      else:
        self.counts.reflections_dropped += 1

  def _store_lesson(self, history: UserHistory, lesson: Any) -> None:
    if isinstance(lesson, BaseException):
      self.counts.reflection_failures += 1
      _log.debug("reflection failed: %s", lesson)
    else:
      self.reflections.add(lesson, history.cumulative_reward)
      self.counts.reflections_written += 1

  def metrics(self) -> dict[str, float]:
    """The counters (`PlannerCounts`: every planned user is one of
    `llm_plans`, `provisional_plans` and `fallbacks`), cache use and latency.

    `cache_hits`: situations answered by the LLM cache or the in-process
    memo (`memo_hits`), `cache_hit_rate` of all lookups; `plan_llm_calls`:
    plan requests the cache did not answer; `llm_calls`: those and the
    lesson requests (`reflection_requests`, never cached) together, the
    requests that reached the model; `failing_situations`: situations
    backing off or due a retry after a failure; `background_pending` and
    `background_busy_s`: the worker's queue and its time answering. Latency
    is per planning call, and `latency_per_user_s` is its total over users
    planned.
    """
    out = self.counts.metrics()
    out["background_pending"] = float(self._worker.pending)
    out["background_busy_s"] = self._worker.busy_seconds
    out["failing_situations"] = float(self.answers.failing)
    out["plan_llm_calls"] = float(self.cache.misses)
    out["llm_calls"] = out["plan_llm_calls"] + out["reflection_requests"]
    out["cache_hits"] = float(self.cache.hits) + out["memo_hits"]
    lookups = out["cache_hits"] + self.cache.misses
    out["cache_hit_rate"] = out["cache_hits"] / lookups if lookups else 0.0
    out["reflection_pool_size"] = float(len(self.reflections or ()))
    if self._latencies:
      lat = np.asarray(self._latencies)
      out.update(latency_mean_s=float(lat.mean()),
                 latency_p50_s=float(np.percentile(lat, 50)),
                 latency_p95_s=float(np.percentile(lat, 95)),
                 latency_max_s=float(lat.max()),
                 latency_per_user_s=float(lat.sum()) / max(out["planned_users"], 1))
    return out


def make_planner(backend: str = "embedded",
                 catalogue: Catalogue | None = None, *,
                 model_options: Mapping[str, Any] | None = None,
                 rules: PlanRules = PlanRules(),
                 seed: int = 0,
                 **planner_options: Any) -> Planner | HeuristicPlanner:
  """A planner for `backend` (see backends.BACKENDS).

  `model_options` go to backends.make_chat_model (e.g. responses for `fake`,
  base_url for `openai:`); `planner_options` to Planner. With `heuristic`
  there is no model, and the options must be empty.
  """
  catalogue = catalogue or default_catalogue()
  if backend == "heuristic":
    if model_options or planner_options:
      raise ValueError(
          f"backend 'heuristic' takes no model or planner options, got "
          f"{sorted({**(model_options or {}), **planner_options})}")
    return HeuristicPlanner(catalogue, rules, seed=seed)
  model = backends.make_chat_model(backend, **dict(model_options or {}))
  planner_options.setdefault("reflections", ReflectionPool())
  return Planner(model, catalogue, rules=rules, seed=seed, **planner_options)
