"""A LangChain chat model that runs a local GGUF file in-process via xllamacpp.

xllamacpp ships prebuilt wheels of llama.cpp's server, so a fresh machine gets
an offline LLM without compiling anything. langchain-community's ChatLlamaCpp
is not used: it needs llama-cpp-python (a long compile) and overrides the
model's rope frequency, which breaks small models.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (AIMessage, BaseMessage, HumanMessage,
                                     SystemMessage)
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr


class _SharedServer:
  """The loaded server, one per model and all its copies.

  `model_copy` copies private attributes shallowly, so copies made with
  other settings (a cache, bound arguments) share this holder and the
  weights load once for all of them.
  """

  def __init__(self) -> None:
    self.lock = threading.Lock()
    # Held by a caller for a series of requests (see `exclusive`).
    self.series = threading.Lock()
    self.server: Any = None
    self.settings: tuple[Any, ...] = ()  # what the server was loaded with


_ROLES = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}


def _role(message: BaseMessage) -> str:
  for kind, role in _ROLES.items():
    if isinstance(message, kind):
      return role
  raise ValueError(
      f"message type {type(message).__name__} is not supported; expected one "
      "of SystemMessage, HumanMessage, AIMessage")


def local_threads(most: int = 2) -> int:
  """A local model's default CPU threads: `most`, or fewer when this
  process may use fewer cores (e.g. a sweep's run pinned to one)."""
  return max(1, min(most, len(os.sched_getaffinity(0))))


class LlamaCppChatModel(BaseChatModel):
  """Chat completions from a GGUF model, optionally constrained by a JSON schema.

  Bind `json_schema=` (a JSON schema dict) to make every reply parse against
  it; llama.cpp turns the schema into a sampling grammar. A conversation
  that ends with an AIMessage is continued from inside that message. Bind
  `logprobs=True` (and `top_logprobs=`) for each reply token's
  log-probability under the model before any grammar, in
  `response_metadata["logprobs"]` (OpenAI's format). The server (and the
  model weights) load on first use. Requests from several threads queue on
  one slot, which keeps that slot's prompt cache: a shared prompt prefix is
  evaluated once. Copies (`model_copy`) share the loaded server.
  """

  model_path: str
  n_threads: int = Field(default_factory=local_threads)
  n_ctx: int = 4096
  max_tokens: int = 128
  temperature: float = 0.0
  # Small models otherwise fill a plan with one name repeated.
  frequency_penalty: float = 1.0
  seed: int = 0

  _shared: _SharedServer = PrivateAttr(default_factory=_SharedServer)

  @property
  def _llm_type(self) -> str:
    return "xllamacpp"

  @property
  def _identifying_params(self) -> dict[str, Any]:
    return {"model_path": self.model_path, "n_ctx": self.n_ctx,
            "max_tokens": self.max_tokens, "temperature": self.temperature,
            "frequency_penalty": self.frequency_penalty, "seed": self.seed}

  def load(self) -> None:
    """Loads the weights now rather than on the first request."""
    self._get_server()

  def exclusive(self) -> threading.Lock:
    """A lock to hold around a series of requests that share a prompt, for
    this model and all its copies: another thread's requests in between
    would replace the slot's prompt cache, and each request of the series
    would evaluate the whole prompt again."""
    return self._shared.series

  def _get_server(self) -> Any:
    shared = self._shared
    settings = (self.model_path, self.n_ctx, self.n_threads)
    with shared.lock:
      if shared.server is not None and shared.settings != settings:
        raise ValueError(
            f"this model is a copy of one loaded with (model_path, n_ctx, "
            f"n_threads) = {shared.settings}, and copies share that server; "
            f"got {settings} — make a new LlamaCppChatModel instead")
      if shared.server is None:
        import xllamacpp  # Imported late: loading it costs time and memory.
        params = xllamacpp.CommonParams()
        params.model.path = self.model_path
        params.n_ctx = self.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = self.n_threads
        params.cpuparams_batch.n_threads = self.n_threads
        params.cache_prompt = True
        params.verbosity = -1
        shared.server = xllamacpp.Server(params)
        shared.settings = settings
      return shared.server

  def _generate(self, messages: list[BaseMessage],
                stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                json_schema: dict[str, Any] | None = None,
                max_tokens: int | None = None,
                logprobs: bool = False,
                top_logprobs: int = 0,
                **kwargs: Any) -> ChatResult:
    if kwargs:
      raise TypeError(
          f"unsupported arguments {sorted(kwargs)}; LlamaCppChatModel accepts "
          "json_schema, max_tokens, logprobs, top_logprobs and stop")
    request: dict[str, Any] = {
        "messages": [{"role": _role(m), "content": str(m.text)} for m in messages],
        "max_tokens": self.max_tokens if max_tokens is None else max_tokens,
        "temperature": self.temperature,
        "frequency_penalty": self.frequency_penalty,
        "seed": self.seed,
    }
    if stop:
      request["stop"] = stop
    if json_schema is not None:
      request["response_format"] = {
          "type": "json_schema", "json_schema": {"schema": json_schema}}
    if logprobs:
      request.update(logprobs=True, top_logprobs=top_logprobs)
    result = self._get_server().handle_chat_completions(request)
    if not isinstance(result, dict) or "choices" not in result:
      raise RuntimeError(f"xllamacpp returned no completion: {str(result)[:200]}")
    usage = result.get("usage", {})
    choice = result["choices"][0]
    message = AIMessage(
        content=choice["message"].get("content") or "",
        response_metadata=({"logprobs": choice.get("logprobs")} if logprobs
                           else {}),
        usage_metadata={
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        })
    return ChatResult(generations=[ChatGeneration(message=message)],
                      llm_output={"timings": result.get("timings", {})})
