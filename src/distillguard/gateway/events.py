"""The event sink: request events leave the hot path through a bounded queue.

The request handler only enqueues (microseconds, never blocks); one writer
thread drains the queue in batches into the store, so a slow disk or database
slows nothing but the writer. When the queue is full the event is dropped and
counted (a metric), rather than stalling traffic. `close()` drains everything
that was queued, so a graceful shutdown loses no event. Observers (online
tracing) see each batch once its write is over (rows the store refused
included: they were requests all the same), on the writer thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from distillguard.gateway import metrics
from distillguard.store import Event, EventStore

log = logging.getLogger(__name__)
_STOP = object()
RETRY_SECONDS = (0.05, 0.2, 1.0, 5.0)


class EventSink:
    def __init__(
        self,
        store: EventStore,
        max_queue: int = 10_000,
        batch_size: int = 500,
        linger_seconds: float = 0.05,
        observers: Sequence[Callable[[list[Event]], None]] = (),
    ) -> None:
        self.store = store
        self.observers = tuple(observers)  # told of each written batch (online tracing)
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._run, name="distillguard-events", daemon=True)
        self._closing = False
        metrics.EVENT_QUEUE_DEPTH.set_function(self._queue.qsize)

    def start(self) -> None:
        self._thread.start()

    def emit(self, event: Event) -> bool:
        """Queue one event; False (and a dropped-event count) when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            metrics.EVENTS_DROPPED.inc()
            return False
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued so far, then stop the writer."""
        if not self._thread.is_alive():
            return
        self._closing = True
        self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("event writer did not finish within %.0f s; events may be lost", timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[Event] = [first]
            # Linger briefly for company: one commit per batch, not per request.
            deadline = time.monotonic() + self.linger_seconds
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            self._tell(batch)

    def _tell(self, batch: list[Event]) -> None:
        """Hand the batch to each observer; a failing observer never stops the writer."""
        for observe in self.observers:
            try:
                observe(batch)
            except Exception:
                log.exception("event observer %r failed on a batch of %d", observe, len(batch))

    def _write(self, batch: list[Event]) -> None:
        """Write one batch, retrying with back-off while the store is down.

        A row the database refuses (events are sanitised first, so this should
        not happen) must not block the queue forever: the batch is retried row
        by row and only the refused row is dropped, loudly.
        """
        attempt = 0
        while batch:
            try:
                self.store.write(batch)
            except (DataError, IntegrityError) as exc:
                if len(batch) > 1:
                    for event in batch:
                        self._write([event])
                    return
                log.error("the store refused event %s; dropped: %s", batch[0].request_id, exc)
                metrics.EVENTS_DROPPED.inc()
                return
            except SQLAlchemyError as exc:
                metrics.EVENT_WRITE_ERRORS.inc()
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                if self._closing and attempt >= len(RETRY_SECONDS):
                    log.error("giving up on %d events at shutdown: %s", len(batch), exc)
                    metrics.EVENTS_DROPPED.inc(len(batch))
                    return
                log.warning("event write failed (retry in %.2f s): %s", delay, exc)
                time.sleep(delay)
                attempt += 1
            else:
                metrics.EVENTS_WRITTEN.inc(len(batch))
                return
