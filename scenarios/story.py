"""The story of one recommendation step, with an external recommender.

Unlike RecSim NG's `recs_story`, the recommender is not part of the network:
the slate comes in from outside (a TF-Agents policy, possibly constrained by
an LLM planner) as the value of the `slate request` variable, so the network
can be stepped one compiled step at a time from Python. Within a step the user
responds to the slate, then the user, the exit rule and the session history
update from that response, so a departure is seen at the step it happens.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from gym import spaces
from recsim_ng.core import value, variable
from recsim_ng.entities.choice_models import selectors
from recsim_ng.lib.tensorflow import field_spec

from lerl_recsim.scenarios import corpus as corpus_lib
from lerl_recsim.scenarios import exit_rules, session_history
from lerl_recsim.scenarios import user as user_lib

Value = value.Value
ValueSpec = value.ValueSpec
Variable = variable.Variable

# Variable names, shared with the environment that steps the network.
CORPUS = "corpus state"
SLATE_REQUEST = "slate request"
SLATE_DOCS = "slate docs"
USER_STATE = "user state"
USER_RESPONSE = "user response"
EXIT_STATE = "exit state"
HISTORY = "session history"
# Variables that describe one user each (leading dimension = users); the
# environment replaces them when a user leaves and a new one arrives.
PER_USER_VARIABLES = (SLATE_REQUEST, SLATE_DOCS, USER_STATE, USER_RESPONSE,
                      EXIT_STATE, HISTORY)


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


def external_slate_story(
    num_users: int,
    slate_size: int,
    corpus: corpus_lib.StaticItemCorpus,
    user: user_lib.SatiationUser,
    exit_rule: exit_rules.ExitRule,
    history: session_history.SessionHistory,
) -> list[Variable]:
  """Wires the entities into RecSim NG variables."""
  corpus_spec = corpus.specs()
  user_spec = user.specs()
  slate_spec = ValueSpec(items=field_spec.Space(spaces.Box(
      0, np.inf, shape=(num_users, slate_size), dtype=np.int32)))

  corpus_state = Variable(name=CORPUS, spec=corpus_spec.get("state"))
  slate_request = Variable(name=SLATE_REQUEST, spec=slate_spec)
  slate_docs = Variable(name=SLATE_DOCS, spec=ValueSpec(
      item_id=field_spec.FieldSpec(), categories=field_spec.FieldSpec(),
      quality=field_spec.FieldSpec(), features=field_spec.FieldSpec(),
      length=field_spec.FieldSpec()))
  user_state = Variable(name=USER_STATE, spec=user_spec.get("state"))
  user_response = Variable(name=USER_RESPONSE, spec=user_spec.get("response"))
  exit_state = Variable(name=EXIT_STATE, spec=exit_rule.specs())
  history_state = Variable(name=HISTORY, spec=history.specs())

  def no_response() -> Value:
    return Value(choice=tf.fill([num_users], slate_size),
                 clicked=tf.zeros([num_users]),
                 engagement=tf.zeros([num_users]))

  # Initial values: a fresh user, nothing shown yet.
  corpus_state.initial_value = variable.value(corpus.initial_state)
  slate_request.initial_value = variable.value(
      lambda: Value(items=tf.zeros([num_users, slate_size], tf.int32)))
  slate_docs.initial_value = variable.value(
      corpus.slate_docs, (corpus_state, slate_request))
  user_state.initial_value = variable.value(user.initial_state)
  user_response.initial_value = variable.value(no_response)
  exit_state.initial_value = variable.value(exit_rule.initial_state)
  history_state.initial_value = variable.value(history.initial_state)

  # One step. The slate request is exogenous: its previous value is set by
  # the caller to the recommender's action before the step.
  corpus_state.value = variable.value(
      corpus.next_state,
      (corpus_state.previous, user_response.previous, slate_docs.previous))
  slate_request.value = variable.value(
      lambda request: request.map(tf.identity), (slate_request.previous,))
  slate_docs.value = variable.value(
      corpus.slate_docs, (corpus_state, slate_request.previous))
  user_response.value = variable.value(
      user.next_response, (user_state.previous, slate_docs))
  user_state.value = variable.value(
      user.next_state, (user_state.previous, user_response, slate_docs))
  exit_state.value = variable.value(
      lambda previous, docs, response: exit_rule.next_state(
          previous, slate_outcome(docs, response)),
      (exit_state.previous, slate_docs, user_response))
  history_state.value = variable.value(
      history.next_state, (history_state.previous, slate_docs, user_response))

  return [corpus_state, slate_request, slate_docs, user_state, user_response,
          exit_state, history_state]
