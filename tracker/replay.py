"""Replay memory for training when rendering examples is slower than the optimiser.

On a GPU host the network trains on far more examples per second than the CPU cores can
render (``tracker.training_data``), so without help the GPU waits for data most of the
time. With a replay memory, the training loop keeps the most recent rendered examples on
the training device and draws every batch uniformly from them, taking in whatever the
data-loader workers have finished in the meantime ("data echoing", Choi et al., 2019). A
cap on the mean number of times each example is drawn keeps a slow data stream from being
overfitted: when drawing one more batch would exceed it, the loop waits for fresh examples.

``BackgroundBatches`` iterates the data loader on a thread so that the loop can take what
is ready without waiting; ``ReplayMemory`` is the ring buffer it is kept in.
"""

from __future__ import annotations

import queue
import threading
import warnings
from typing import Iterable, Iterator

import torch


class BackgroundBatches:
    """Pulls batches from ``batches`` on a daemon thread into a short queue.

    ``get(block=False)`` returns None when nothing is ready. An exception raised by the
    iterator (a data-loader worker that died, say) is raised again by ``get``. When a finite
    iterator has run out, ``get`` returns None and ``ended`` is True.
    """

    _END = object()

    def __init__(self, batches: Iterable[dict[str, torch.Tensor]], max_pending: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._stop = threading.Event()
        self.ended = False
        self._thread = threading.Thread(target=self._pull, args=(iter(batches),), name="training-batches", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Queue ``item`` unless closed first (False then); the timeout lets close() stop a full queue's wait."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pull(self, iterator: Iterator) -> None:
        try:
            for batch in iterator:
                if not self._put(batch):
                    return
            item = self._END
        except BaseException as error:  # handed to the training loop, which raises it
            item = error
        self._put(item)

    def get(self, block: bool) -> dict[str, torch.Tensor] | None:
        if self.ended:
            return None
        try:
            item = self._queue.get(block=block)
        except queue.Empty:
            return None
        if item is self._END:
            self.ended = True
            return None
        if isinstance(item, BaseException):
            raise RuntimeError("the training data stream failed") from item
        return item

    def close(self) -> None:
        self._stop.set()
        # The thread stops once the loader hands over the batch it is making.
        self._thread.join(timeout=30.0)
        if self._thread.is_alive():
            warnings.warn("the training data thread is still waiting for its loader; leaving it behind", RuntimeWarning, stacklevel=2)


class ReplayMemory:
    """Ring buffer of the last ``capacity`` examples, every field on ``device``.

    Batches added must all have the same fields, shapes and dtypes (one data stream).
    """

    def __init__(self, capacity: int, device: torch.device) -> None:
        if capacity < 1:
            raise ValueError(f"replay memory capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, device
        self._fields: dict[str, torch.Tensor] = {}
        self._next = 0  # slot the next example goes to
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, batch: dict[str, torch.Tensor]) -> int:
        """Store a batch (oldest examples make room); returns how many examples it held."""
        count = len(next(iter(batch.values())))
        if not self._fields:
            self._fields = {k: torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device) for k, v in batch.items()}
        if count > self.capacity:  # only the newest fit
            batch = {k: v[-self.capacity :] for k, v in batch.items()}
        kept = min(count, self.capacity)
        slots = (self._next + torch.arange(kept)) % self.capacity
        slots = slots.to(self.device)
        for key, store in self._fields.items():
            store[slots] = batch[key].to(self.device, non_blocking=True)
        self._next = (self._next + kept) % self.capacity
        self._size = min(self._size + kept, self.capacity)
        return count

    def sample(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``count`` examples drawn uniformly, with replacement, from what is stored."""
        if self._size == 0:
            raise ValueError("the replay memory is empty")
        index = torch.randint(self._size, (count,), generator=generator).to(self.device)
        return {k: v[index] for k, v in self._fields.items()}
