"""A worker thread that answers LLM requests while training goes on.

The training loop must never wait on a model that takes a second per
request. It hands requests to a `BackgroundWorker` and collects finished
answers later with `drain()`, on its own thread: the worker never touches
the planner's state, so nothing but two queues is shared.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Hashable

# A batch runner: inputs -> one result or exception per input (never raises).
BatchFn = Callable[[list[Any]], list[Any]]


class BackgroundWorker:
  """Runs submitted requests in batches on one daemon thread.

  Args:
    run_batch: answers a list of inputs; gets at most `batch_size` of them.
    max_pending: requests queued or in flight at most; `submit` refuses
      more (the caller asks again the next time it needs the answer).
    batch_size: requests taken from the queue per batch.
    busy_share: at most this share of wall time is spent answering: after
      a batch that took d seconds the worker rests d * (1 / busy_share - 1)
      seconds, so that a model computing on this machine leaves the
      training its cores. 1 never rests.
  """

  def __init__(self, run_batch: BatchFn, max_pending: int = 256,
               batch_size: int = 8, busy_share: float = 1.0) -> None:
    if max_pending < 1 or batch_size < 1:
      raise ValueError(f"max_pending and batch_size must be >= 1, got "
                       f"{max_pending} and {batch_size}")
    self.busy_share = busy_share
    self._stopping = threading.Event()
    self._run_batch = run_batch
    self._max_pending = max_pending
    self._batch_size = batch_size
    self._requests: queue.Queue[tuple[Hashable, Any] | None] = queue.Queue()
    self._results: queue.Queue[tuple[Hashable, Any]] = queue.Queue()
    self._pending: set[Hashable] = set()  # touched by the caller's thread only
    self._unanswered = 0
    self._answered = threading.Condition()
    self._busy_seconds = 0.0
    self._thread: threading.Thread | None = None

  @property
  def pending(self) -> int:
    """Requests submitted and not yet drained."""
    return len(self._pending)

  @property
  def busy_share(self) -> float:
    """The share of wall time the worker may spend answering; it may be
    changed while the worker runs (it applies from the next rest on)."""
    return self._busy_share

  @busy_share.setter
  def busy_share(self, share: float) -> None:
    if not 0.0 < share <= 1.0:
      raise ValueError(f"busy_share must lie in (0, 1], got {share!r}")
    self._busy_share = share
    self._rest_factor = 1.0 / share - 1.0

  @property
  def busy_seconds(self) -> float:
    """Wall time the worker has spent answering."""
    return self._busy_seconds

  def submit(self, key: Hashable, request: Any) -> bool:
    """Queues `request` under `key` unless that key is already pending or
    the queue is full; True when queued."""
    if key in self._pending or len(self._pending) >= self._max_pending:
      return False
    if self._thread is None:
      self._thread = threading.Thread(target=self._serve, daemon=True,
                                      name="lerl-planner-worker")
      self._thread.start()
    self._pending.add(key)
    with self._answered:
      self._unanswered += 1
    self._requests.put((key, request))
    return True

  def drain(self) -> list[tuple[Hashable, Any]]:
    """Finished (key, result-or-exception) pairs since the last drain."""
    finished = []
    while True:
      try:
        key, result = self._results.get_nowait()
      except queue.Empty:
        return finished
      self._pending.discard(key)
      finished.append((key, result))

  def wait(self, timeout_s: float | None = None) -> bool:
    """Blocks until every submitted request is answered (drain() then has
    them all); False if `timeout_s` passed first."""
    with self._answered:
      return self._answered.wait_for(lambda: self._unanswered == 0, timeout_s)

  def cancel(self) -> list[Hashable]:
    """Drops the queued requests (the batch in flight is answered as usual);
    returns their keys."""
    dropped = []
    while True:
      try:
        dropped.append(self._requests.get_nowait())
      except queue.Empty:
        break
    keys = [key for key, _ in dropped]
    self._pending.difference_update(keys)
    with self._answered:
      self._unanswered -= len(keys)
      self._answered.notify_all()
    return keys

  def close(self) -> None:
    """Stops the thread after the batch in flight; queued requests drop."""
    if self._thread is None:
      return
    self.cancel()
    self._stopping.set()
    self._requests.put(None)
    self._thread.join()
    self._thread = None
    self._stopping.clear()

  def _take_batch(self) -> list[tuple[Hashable, Any]] | None:
    first = self._requests.get()
    if first is None:
      return None
    batch = [first]
    while len(batch) < self._batch_size:
      try:
        item = self._requests.get_nowait()
      except queue.Empty:
        break
      if item is None:  # Stop after this batch.
        self._requests.put(None)
        break
      batch.append(item)
    return batch

  def _serve(self) -> None:
    while (batch := self._take_batch()) is not None:
      start = time.perf_counter()
      try:
        results = self._run_batch([request for _, request in batch])
      except Exception as error:  # Handed to the caller as every answer.
        results = [error] * len(batch)
      busy = time.perf_counter() - start
      self._busy_seconds += busy
      for (key, _), result in zip(batch, results):
        self._results.put((key, result))
      with self._answered:
        self._unanswered -= len(batch)
        self._answered.notify_all()
      self._stopping.wait(busy * self._rest_factor)
