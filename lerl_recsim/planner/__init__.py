"""LERL's high level: an LLM picks the categories a user sees next.

`make_planner(backend)` gives an object with `plan(histories)`,
`end_sessions(histories)`, `metrics()` and `evaluation_view()` (a planner
for evaluation that writes no lessons); see backends.BACKENDS.
"""

from lerl_recsim.planner.backends import BACKENDS, make_chat_model
from lerl_recsim.planner.chat_models import LlamaCppChatModel
from lerl_recsim.planner.heuristic import HeuristicPlanner
from lerl_recsim.planner.history import StepRecord, UserHistory
from lerl_recsim.planner.chain import FALLBACK_CAUSES, Fallback
from lerl_recsim.planner.counts import PlannerCounts
from lerl_recsim.planner.planner import Planner, make_planner
from lerl_recsim.planner.prompt import PromptConfig
from lerl_recsim.planner.reflections import ReflectionPool
from lerl_recsim.planner.validation import PlanRules

__all__ = [
    "BACKENDS", "FALLBACK_CAUSES", "Fallback", "HeuristicPlanner",
    "LlamaCppChatModel", "PlanRules", "Planner", "PlannerCounts",
    "PromptConfig", "ReflectionPool", "StepRecord", "UserHistory",
    "make_chat_model", "make_planner",
]
