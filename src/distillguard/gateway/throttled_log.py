"""Logging for failures that repeat on every request: once per interval, with a count.

An outage (Redis gone, the store refusing writes) fails each request the same way;
logging each would flood the log with identical tracebacks and cost CPU when the
gateway can least afford it.
"""

from __future__ import annotations

import logging
import threading
import time


class ThrottledLog:
    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()  # the event writer and the event loop both log
        self._next = 0.0
        self._held = 0

    def error(self, message: str, *args: object, exc_info: bool = False) -> bool:
        """Log now unless logged within the interval; True when it was logged."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return False
            held, self._held = self._held, 0
            self._next = now + self.interval
        if held:
            message += f" ({held} more like it since the last report)"
        self.logger.error(message, *args, exc_info=exc_info)
        return True
