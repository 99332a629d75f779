"""Request events: each request's `Trace`, and the sink that takes them off the hot path.

A `Trace` is filled as the request goes and emitted once, through a bounded queue.
The request handler only enqueues (microseconds, never blocks); one writer
thread drains the queue in batches into the store, so a slow disk or database
slows nothing but the writer. The queue is bounded by count and by bytes: when
either is reached the event is dropped and counted (a metric), rather than
stalling traffic or growing memory while the store is down. `close()` drains everything
that was queued, so a graceful shutdown loses no event. Observers (online
tracing) see each batch once its write is over (rows the store refused
included: they were requests all the same), on the writer thread.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from starlette.requests import Request

from distillguard import metrics
from distillguard.gateway.throttled_log import ThrottledLog
from distillguard.store import Event, EventStore

log = logging.getLogger(__name__)
_failures = ThrottledLog(log)
_STOP = object()
RETRY_SECONDS = (0.05, 0.2, 1.0, 5.0)
SUMMARY_HEAD = 2048  # bytes of a refused body an event keeps
HEADER_TEXT = 512  # characters of a header (User-Agent) an event keeps


@dataclass
class Trace:
    """What one request leaves behind: filled as the request goes, emitted once."""

    endpoint: str
    started: float = field(default_factory=time.time)
    clock: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: f"req_{secrets.token_hex(12)}")
    event: Event | None = None
    body: bytes = b""  # as received: what the queued event keeps (see `Admitted.end`)

    def begin(self, request: Request, client_ip: str | None) -> Event:
        agent = request.headers.get("user-agent")
        self.event = Event(
            ts=self.started,
            request_id=self.request_id,
            endpoint=self.endpoint,
            status=0,
            latency_ms=0.0,
            decision="rejected",
            client_ip=client_ip,
            user_agent=agent[:HEADER_TEXT] if agent else None,
        )
        return self.event

    def finish(self, status: int, error: str | None = None) -> Event:
        assert self.event is not None
        self.event.status = status
        self.event.error = error
        self.event.latency_ms = (time.perf_counter() - self.clock) * 1000
        metrics.REQUESTS.labels(self.endpoint, str(status), self.event.decision).inc()
        if self.event.refused_by:  # "account:<id>:tokens", "tier:block": never the id
            scope, *_, kind = self.event.refused_by.split(":")
            mode = "shadow" if self.event.shadow else "enforced"
            metrics.REFUSALS.labels(scope, kind, self.event.tier or "normal", mode).inc()
        metrics.LATENCY.labels(self.endpoint).observe(self.event.latency_ms / 1000)
        return self.event

    @property
    def size(self) -> int:
        """Bytes the event holds while queued: its body as bytes, the answer, a little more."""
        event = self.event
        assert event is not None
        held = event.request if isinstance(event.request, bytes) else b""
        return 512 + len(held) + len(event.response_text or "")


class EventSink:
    def __init__(
        self,
        store: EventStore,
        max_queue: int = 10_000,
        batch_size: int = 500,
        linger_seconds: float = 0.05,
        observers: Sequence[Callable[[list[Event]], None]] = (),
        max_bytes: int = 64 << 20,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._bytes = 0  # what the queued events hold, as their emitters estimated it
        self._sizes: dict[int, int] = {}  # id(event) -> its estimate, until written
        self._bytes_lock = threading.Lock()
        self.observers = tuple(observers)  # told of each written batch (online tracing)
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._run, name="distillguard-events", daemon=True)
        self._closing = False
        metrics.EVENT_QUEUE_DEPTH.set_function(self._queue.qsize)
        metrics.EVENT_WRITER_ALIVE.set_function(lambda: float(self.alive))

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the writer runs (`/healthz` fails when it does not: events would be lost)."""
        return self._thread.is_alive()

    def emit(self, event: Event, size: int = 0) -> bool:
        """Queue one event of about `size` bytes; False (and a dropped-event count) when
        the queue is full by count or by bytes."""
        with self._bytes_lock:
            if self._bytes + size > self.max_bytes:
                metrics.EVENTS_DROPPED.inc()
                return False
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                metrics.EVENTS_DROPPED.inc()
                return False
            self._bytes += size
            self._sizes[id(event)] = size
        return True

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def _release(self, batch: Sequence[Event]) -> None:
        with self._bytes_lock:
            for event in batch:
                self._bytes -= self._sizes.pop(id(event), 0)

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
            try:
                self._write(batch)
            except Exception:  # whatever one batch does, the writer goes on with the next
                metrics.EVENTS_DROPPED.inc(len(batch))
                _failures.error("dropped %d events the writer failed on", len(batch), exc_info=True)
            self._release(batch)
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


def body_summary(body: bytes) -> dict[str, Any]:
    """What an event keeps of a body that was refused: its size, its SHA-256 and its
    first bytes. A refused caller pays no quota, so storing whole bodies would let it
    write to our disk for free."""
    return {
        "truncated": True,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "head": body[:SUMMARY_HEAD].decode("utf-8", "replace"),
    }


class EventSampler:
    """At most `rate` events a second (bursts of one second's worth); the rest skipped.

    Unauthenticated requests cost an outsider nothing, so their events are sampled: each
    stored one says how many were skipped since the last."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._allowance = rate
        self._at = time.monotonic()
        self._skipped = 0

    def take(self) -> int | None:
        """None: skip this one; else how many were skipped before it."""
        now = time.monotonic()
        self._allowance = min(self.rate, self._allowance + (now - self._at) * self.rate)
        self._at = now
        if self._allowance < 1:
            self._skipped += 1
            return None
        self._allowance -= 1
        skipped, self._skipped = self._skipped, 0
        return skipped
