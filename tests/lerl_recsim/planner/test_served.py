"""The planner on a served model: `lerl-train --planner=openai:MODEL` against
a real OpenAI-compatible HTTP server on loopback, xllamacpp's llama.cpp
server with the embedded SmolLM2 model, as many trainers would share one.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import urllib.request
from typing import Any, Iterator

import pytest

from lerl_recsim.planner import FALLBACK_CAUSES, backends

pytest.importorskip("langchain_openai")

MODEL = "smollm2"
# The server: the model under the name MODEL, one slot, its address on
# stdout, until its standard input closes.
SERVE = """
import sys, xllamacpp
params = xllamacpp.CommonParams()
params.model.path = sys.argv[1]
params.model_alias = {sys.argv[2]}
params.n_ctx = 4096
params.n_parallel = 1
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
params.endpoint_metrics = True
params.verbosity = -1
server = xllamacpp.Server(params)
print(server.listening_address, flush=True)
sys.stdin.read()
"""


@pytest.fixture(name="served", scope="module")
def served_fixture() -> Iterator[str]:
  """The server's address (http://127.0.0.1:PORT, a port of its own)."""
  server = subprocess.Popen(
      [sys.executable, "-c", SERVE, backends.embedded_model_path(), MODEL],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    address = server.stdout.readline().strip()
    assert address.startswith("http://127.0.0.1:"), address
    yield address
  finally:
    server.stdin.close()
    server.wait(timeout=60)


def tokens_generated(address: str) -> float:
  """What the server's metrics count of the tokens it has generated."""
  with urllib.request.urlopen(f"{address}/metrics", timeout=30) as reply:
    metrics = reply.read().decode()
  [line] = [line for line in metrics.splitlines()
            if line.startswith("llamacpp:tokens_predicted_total ")]
  return float(line.split()[1])


def train(root_dir: pathlib.Path, address: str, cache: pathlib.Path
          ) -> dict[str, Any]:
  """A short `lerl` run planned by the served model; its summary.json."""
  command = [sys.executable, "-m", "lerl_recsim.binaries.train", "--agent=lerl",
             f"--planner=openai:{MODEL}", "--planner_mode=wait",
             f"--planner_cache={cache}", f"--root_dir={root_dir}",
             "--num_users=4", "--num_iterations=4", "--num_eval_sessions=4",
             "--eval_interval=4", "--checkpoint_interval=4", "--replan_every=10",
             "--num_items=40"]
  environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                 "LERL_OPENAI_BASE_URL": f"{address}/v1"}
  finished = subprocess.run(command, env=environment, capture_output=True,
                            text=True, timeout=600)
  assert finished.returncode == 0, finished.stderr[-3000:]
  return json.loads((root_dir / "summary.json").read_text())["planner"]


def test_trainers_share_a_served_model_and_a_cache_of_its_answers(
    served, tmp_path):
  cache = tmp_path / "planner_cache.sqlite"
  first = train(tmp_path / "first", served, cache)
  generated = tokens_generated(served)
  for counts in first.values():
    assert counts["llm_plans"] + counts["provisional_plans"] + \
        counts["fallbacks"] == counts["planned_users"] > 0, counts
    assert counts["fallbacks"] == sum(counts[f"fallback_{cause}"]
                                      for cause in FALLBACK_CAUSES)
  # Too few sessions end for a lesson: every LLM call is a plan request.
  assert first["train"]["llm_calls"] > 0 and generated > 0
  assert first["train"]["llm_plans"] > 0  # plans the served model made
  # A second trainer with the same seed asks the same questions: the shared
  # SQLite cache answers each, and the server is not asked again.
  second = train(tmp_path / "second", served, cache)
  assert tokens_generated(served) == generated
  for phase, counts in second.items():
    assert counts["llm_calls"] == 0
    assert counts["cache_hits"] == (first[phase]["cache_hits"] +
                                    first[phase]["llm_calls"])
    for name in ("llm_plans", "fallbacks", "planned_users"):
      assert counts[name] == first[phase][name]
