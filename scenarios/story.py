"""The story of a session step, with the slate from outside or from inside.

Two stories wire the same entities (corpus, user, exit rule, session
history) the same way; they differ only in where the slate comes from:

- `external_slate_story`: the slate is the value of the `slate request`
  variable, set from outside before each step (a TF-Agents policy, possibly
  constrained by an LLM planner; see `lerl_recsim.simulator`), so the network
  can be stepped one compiled step at a time from Python.
- `recommender_story`: a RecSim NG recommender entity is part of the network,
  as in RecSim NG's `recs_story`, so RecSim NG's runtime runs whole
  trajectories (`SessionNetwork`).

Within a step the user responds to the slate, then the user, the exit rule
and the session history update from that response, so a departure is seen at
the step it happens. The initial step shows nothing (no response), like a
TF-Agents environment's reset.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf
from gym import spaces
from recsim_ng.core import network as network_lib
from recsim_ng.core import value, variable
from recsim_ng.entities.choice_models import selectors
from recsim_ng.entities.recommendation import recommender as recommender_lib
from recsim_ng.lib.tensorflow import field_spec

from lerl_recsim.scenarios import corpus as corpus_lib
from lerl_recsim.scenarios import exit_rules, seeding, session_history
from lerl_recsim.scenarios import user as user_lib

Value = value.Value
ValueSpec = value.ValueSpec
Variable = variable.Variable
Dependency = variable.Dependency
NetworkValue = network_lib.NetworkValue
Recommender = recommender_lib.BaseRecommender

# Variable names, shared with the code that steps or reads the network.
CORPUS = "corpus state"
AVAILABLE_DOCS = "available docs"
SLATE_REQUEST = "slate request"
SLATE_DOCS = "slate docs"
RECOMMENDER_STATE = "recommender state"
USER_STATE = "user state"
USER_RESPONSE = "user response"
EXIT_STATE = "exit state"
HISTORY = "session history"
STEP_SEED = "step seed"
# Variables shared by all users. Every other variable describes one user per
# slot (leading dimension = users) and is replaced when a new user arrives.
SHARED_VARIABLES = (CORPUS, AVAILABLE_DOCS, STEP_SEED)


@dataclasses.dataclass(frozen=True)
class Entities:
  """A scenario's entities, built once and wired by either story.

  Attributes:
    config: what RecSim NG entity constructors read (`num_users`,
      `num_docs`, `num_topics`, `slate_size`, `history_length`,
      `num_categories`); a recommender is built from it.
  """

  config: Mapping[str, Any]
  corpus: corpus_lib.StaticItemCorpus
  user: user_lib.SatiationUser
  exit_rule: exit_rules.ExitRule
  history: session_history.SessionHistory

  @property
  def num_users(self) -> int:
    return self.config["num_users"]

  @property
  def slate_size(self) -> int:
    return self.config["slate_size"]


def slate_outcome(slate_docs: Value, response: Value) -> exit_rules.SlateOutcome:
  """Collects what exit rules see of a step."""
  slate_size = slate_docs.get("quality").shape[-1]
  chosen = selectors.get_chosen(
      Value(quality=slate_docs.get("quality"), length=slate_docs.get("length")),
      response.get("choice"), nochoice_value=0.0)
  return exit_rules.SlateOutcome(
      categories=slate_docs.get("categories"),
      responses=tf.one_hot(response.get("choice"), slate_size) *
      response.get("engagement")[:, None],
      clicked=response.get("clicked"),
      chosen_quality=chosen.get("quality"),
      chosen_length=chosen.get("length"))


def observation(history: Value) -> Value:
  """What a recommender observes of the session history: the same fields as
  a TF-Agents policy's observation (`session_history.OBSERVED_FIELDS`)."""
  return Value(**{name: history.get(name)
                  for name in session_history.OBSERVED_FIELDS})


def ended(exit_state: Value) -> tf.Tensor:
  """bool [U]: the session ended at this step (the user left, or the
  session reached its maximum length)."""
  return (exit_state.get("left") + exit_state.get("truncated")) > 0.0


def with_arrivals(stepped: NetworkValue, fresh: NetworkValue,
                  arriving: tf.Tensor) -> NetworkValue:
  """`stepped`, with the slots in `arriving` (bool [U]) taking the users of
  `fresh` (an initial step): every variable but the shared ones."""

  def select(new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
    condition = tf.reshape(arriving, [-1] + [1] * (len(old.shape) - 1))
    return tf.where(condition, new, old)

  return {name: (v if name in SHARED_VARIABLES else Value(
      **tf.nest.map_structure(select, dict(fresh[name].as_dict),
                              dict(v.as_dict))))
          for name, v in stepped.items()}


def _session_variables(entities: Entities, shown: Dependency | Variable
                       ) -> list[Variable]:
  """The user state, user response, exit state and session history
  variables, in that order, responding at each step after the initial one
  to the slate that `shown` gives."""
  num_users, slate_size = entities.num_users, entities.slate_size
  user, exit_rule, history = entities.user, entities.exit_rule, entities.history
  user_spec = user.specs()
  user_state = Variable(name=USER_STATE, spec=user_spec.get("state"))
  user_response = Variable(name=USER_RESPONSE, spec=user_spec.get("response"))
  exit_state = Variable(name=EXIT_STATE, spec=exit_rule.specs())
  history_state = Variable(name=HISTORY, spec=history.specs())

  def no_response() -> Value:
    return Value(choice=tf.fill([num_users], slate_size),
                 clicked=tf.zeros([num_users]),
                 engagement=tf.zeros([num_users]))

  user_state.initial_value = variable.value(user.initial_state)
  user_response.initial_value = variable.value(no_response)
  exit_state.initial_value = variable.value(exit_rule.initial_state)
  history_state.initial_value = variable.value(history.initial_state)

  user_response.value = variable.value(
      user.next_response, (user_state.previous, shown))
  user_state.value = variable.value(
      user.next_state, (user_state.previous, user_response, shown))
  exit_state.value = variable.value(
      lambda previous, docs, response: exit_rule.next_state(
          previous, slate_outcome(docs, response)),
      (exit_state.previous, shown, user_response))
  history_state.value = variable.value(
      history.next_state, (history_state.previous, shown, user_response))
  return [user_state, user_response, exit_state, history_state]


def external_slate_story(entities: Entities) -> list[Variable]:
  """The story with the slate set from outside: before each step, the caller
  sets the previous value of `slate request` to the slates ({items: int32
  [U, k]}) the users see at that step."""
  corpus = entities.corpus
  corpus_state = Variable(name=CORPUS, spec=corpus.specs().get("state"))
  slate_request = Variable(name=SLATE_REQUEST, spec=ValueSpec(
      items=field_spec.Space(spaces.Box(
          0, np.inf, shape=(entities.num_users, entities.slate_size),
          dtype=np.int32))))
  slate_docs = Variable(name=SLATE_DOCS, spec=ValueSpec(
      item_id=field_spec.FieldSpec(), categories=field_spec.FieldSpec(),
      quality=field_spec.FieldSpec(), features=field_spec.FieldSpec(),
      length=field_spec.FieldSpec()))
  session = _session_variables(entities, slate_docs)
  user_response = session[1]

  # The initial slate is a placeholder nobody responds to.
  corpus_state.initial_value = variable.value(corpus.initial_state)
  slate_request.initial_value = variable.value(lambda: Value(
      items=tf.zeros([entities.num_users, entities.slate_size], tf.int32)))
  slate_docs.initial_value = variable.value(
      corpus.slate_docs, (corpus_state, slate_request))

  corpus_state.value = variable.value(
      corpus.next_state,
      (corpus_state.previous, user_response.previous, slate_docs.previous))
  slate_request.value = variable.value(
      lambda request: request.map(tf.identity), (slate_request.previous,))
  slate_docs.value = variable.value(
      corpus.slate_docs, (corpus_state, slate_request.previous))
  return [corpus_state, slate_request, slate_docs] + session


def recommender_story(entities: Entities,
                      recommender: Recommender) -> list[Variable]:
  """The story with a RecSim NG recommender entity inside.

  The recommender is a `BaseRecommender`: `specs()` gives its `state` and
  `slate` specs; `slate_docs(state, observation, available_docs)` returns
  the slate, the available docs (`item_id`, `categories`, `quality`,
  `features`, `length`, each [N, ...]) gathered at its items ([U, k, ...]),
  plus any fields of its own; `next_state(state, response, slate_docs)`
  updates its state from the slate shown and the user's response. Its state
  and slate fields lead with the user dimension: a new user in a slot gets
  the recommender's initial state there.

  The `slate docs` of step t are what the recommender decides after seeing
  step t (the observation is the session history as a TF-Agents policy sees
  it); the user sees them at step t + 1, as an environment's action after a
  time step. The recommender draws its randomness from a stream of its own
  (`seeding.separate_stream`), so the users' draws under a seed depend only
  on the slates they see.
  """
  corpus = entities.corpus
  corpus_spec = corpus.specs()
  recommender_spec = recommender.specs()
  corpus_state = Variable(name=CORPUS, spec=corpus_spec.get("state"))
  available_docs = Variable(name=AVAILABLE_DOCS,
                            spec=corpus_spec.get("available_docs"))
  recommender_state = Variable(name=RECOMMENDER_STATE,
                               spec=recommender_spec.get("state"))
  slate_docs = Variable(name=SLATE_DOCS, spec=recommender_spec.get("slate"))
  session = _session_variables(entities, slate_docs.previous)
  user_response, history_state = session[1], session[3]

  def recommend(state: Value, history: Value, docs: Value) -> Value:
    with seeding.separate_stream():
      return recommender.slate_docs(state, observation(history), docs)

  corpus_state.initial_value = variable.value(corpus.initial_state)
  available_docs.initial_value = variable.value(
      corpus.available_documents, (corpus_state,))
  recommender_state.initial_value = variable.value(recommender.initial_state)
  slate_docs.initial_value = variable.value(
      recommend, (recommender_state, history_state, available_docs))

  corpus_state.value = variable.value(
      corpus.next_state,
      (corpus_state.previous, user_response, slate_docs.previous))
  available_docs.value = variable.value(
      corpus.available_documents, (corpus_state,))
  recommender_state.value = variable.value(
      recommender.next_state,
      (recommender_state.previous, user_response, slate_docs.previous))
  slate_docs.value = variable.value(
      recommend, (recommender_state, history_state, available_docs))
  return [corpus_state, available_docs, recommender_state, slate_docs] + session


class SessionNetwork(network_lib.Network):
  """A story's network whose steps are seeded and renew departed users.

  RecSim NG has no notion of a user leaving. Here, as in the TF-Agents
  environments, a slot whose session ended at a step (the exit state's
  `left` or `truncated` is 1, so the trajectory shows each departure) gets
  a new user at the next step: every variable but the shared ones takes its
  initial value there. Every draw is keyed on the network's seed and the
  step (the `step seed` variable, [seed, t + 1] at step t), as the
  environments key theirs, so `runtime.TFRuntime(network).trajectory(...)`
  of `recommender_story` shows the same users, responses and departures as
  an environment with the same seed given the same slates.
  """

  def __init__(self, variables: Sequence[Variable], seed: int,
               sanitize: bool = True):
    step_seed = Variable(name=STEP_SEED, spec=ValueSpec(
        seed=field_spec.FieldSpec()))
    step_seed.initial_value = variable.value(
        lambda: Value(seed=tf.constant([seed, 1], tf.int64)))
    step_seed.value = variable.value(
        lambda previous: Value(seed=_next_seed(previous)),
        (step_seed.previous,))
    super().__init__(list(variables) + [step_seed], sanitize=sanitize)
    self._seed = int(seed)

  def initial_step(self) -> NetworkValue:
    with seeding.stateless_sampling(tf.constant([self._seed, 1], tf.int64)):
      return super().initial_step()

  def step(self, previous_value: NetworkValue) -> NetworkValue:
    with seeding.stateless_sampling(_next_seed(previous_value[STEP_SEED])):
      stepped = super().step(previous_value)
      fresh = super().initial_step()
    return with_arrivals(stepped, fresh,
                         ended(previous_value[EXIT_STATE]))


def _next_seed(step_seed: Value) -> tf.Tensor:
  return step_seed.get("seed") + tf.constant([0, 1], tf.int64)
