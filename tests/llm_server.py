"""A real OpenAI-compatible HTTP server on loopback that misbehaves on command.

Tests point the `openai:` backend at it (base_url) to see what the planner
does when a served model hangs, errors, drops connections, sends invalid
JSON, names categories outside the catalogue, or dies and comes back. Well
behaved, it answers every request with the first categories its JSON schema
allows, so a valid plan.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import zlib
from typing import Any

# What the server does with a request (see `reply`).
MODES = ("ok", "hang", "error_500", "close", "invalid_body", "invalid_content",
         "off_catalogue")


# What an `off_catalogue` reply names besides an unknown category: code
# that, if anything ran it, would create the file `executed` in the working
# directory.
INJECTED = "__import__('pathlib').Path('executed').touch()"


def _completion(content: str) -> dict[str, Any]:
  return {"id": "loopback", "object": "chat.completion", "created": 0,
          "model": "loopback",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": content}}],
          "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                    "total_tokens": 2}}


def valid_plan(request: dict[str, Any]) -> str:
  """The first categories the request's plan schema allows."""
  schema = request["response_format"]["json_schema"]["schema"]
  categories = schema["properties"]["categories"]
  return json.dumps({"categories":
                     categories["items"]["enum"][:categories["minItems"]]})


class _QuietServer(http.server.ThreadingHTTPServer):
  daemon_threads = True

  def handle_error(self, request: Any, client_address: Any) -> None:
    del request, client_address  # a client that gave up on a hanging reply


class LoopbackLLMServer:
  """`mode` (one of MODES) may change at any time; `requests` counts the
  chat requests received and `authorizations` holds each one's
  Authorization header; `stop()` kills the server and `start()` brings it
  back on the same port.

  Args:
    mode: what to do with requests (see MODES).
    hang_s: how long a hanging request hangs.
    mixed: if given, each request gets one of these modes, chosen by its
      messages (so the client's retries of a request meet the same fault).
  """

  def __init__(self, mode: str = "ok", hang_s: float = 5.0,
               mixed: tuple[str, ...] = ()) -> None:
    self.mode = mode
    self.mixed = mixed
    self.hang_s = hang_s
    self.requests = 0
    self.authorizations: list[str] = []
    self.deaths = 0
    self.port = 0
    self._server: http.server.ThreadingHTTPServer | None = None
    self._lock = threading.Lock()
    self._connections: set[socket.socket] = set()  # kept alive by clients

  @property
  def base_url(self) -> str:
    return f"http://127.0.0.1:{self.port}/v1"

  def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
    owner = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args: Any) -> None:  # quiet
        del args

      def setup(self) -> None:
        super().setup()
        with owner._lock:
          owner._connections.add(self.connection)

      def finish(self) -> None:
        with owner._lock:
          owner._connections.discard(self.connection)
        super().finish()

      def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with owner._lock:
          owner.requests += 1
          owner.authorizations.append(self.headers.get("Authorization", ""))
          mode = owner.mode
        if owner.mixed:
          messages = json.dumps(json.loads(body)["messages"]).encode()
          mode = owner.mixed[zlib.crc32(messages) % len(owner.mixed)]
        if mode not in MODES:
          raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if mode == "close":
          self.close_connection = True
          self.connection.shutdown(socket.SHUT_RDWR)
          return
        if mode == "hang":
          time.sleep(owner.hang_s)
        if mode == "error_500":
          self._send(500, b'{"error": {"message": "internal error"}}')
          return
        request = json.loads(body)
        content = {"invalid_content": "the plan is rock, then jazz {",
                   "off_catalogue": json.dumps(
                       {"categories": [INJECTED, "not a category"]}),
                   }.get(mode) or valid_plan(request)
        payload = (b'{"choices": [ not json' if mode == "invalid_body"
                   else json.dumps(_completion(content)).encode())
        self._send(200, payload)

      def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    return Handler

  def start(self) -> "LoopbackLLMServer":
    server = _QuietServer(("127.0.0.1", self.port), self._handler())
    self.port = server.server_address[1]
    self._server = server
    threading.Thread(target=server.serve_forever, daemon=True,
                     name="loopback-llm").start()
    return self

  def stop(self) -> None:
    """Dies: stops listening and drops the connections clients keep open."""
    if self._server is not None:
      self._server.shutdown()
      self._server.server_close()
      self._server = None
    with self._lock:
      for connection in self._connections:
        try:
          connection.shutdown(socket.SHUT_RDWR)
        except OSError:
          pass
      self._connections.clear()

  def die_after(self, requests: int, down_s: float) -> None:
    """Once `requests` requests have come in, dies for `down_s` seconds
    (watched on a thread of its own)."""
    def watch() -> None:
      while self.requests < requests:
        time.sleep(0.01)
      self.stop()
      self.deaths += 1
      time.sleep(down_s)
      self.start()

    threading.Thread(target=watch, daemon=True, name="loopback-dies").start()

  def __enter__(self) -> "LoopbackLLMServer":
    return self.start()

  def __exit__(self, *exc: Any) -> None:
    self.stop()
