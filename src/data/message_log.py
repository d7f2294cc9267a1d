"""Bounded logging of bad-input messages, shared by the detection readers, the text-LMDB
converters and the text dataset: every bad entry is counted, but only the first
:data:`MAX_MESSAGES` are kept and shown, so a badly broken data set neither floods the console
nor grows memory."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

logger = logging.getLogger("src.data")

MAX_MESSAGES = 50


@dataclass
class MessageLog:
    """The first messages naming a bad file or record; the rest are only counted."""

    messages: list[str] = field(default_factory=list)
    suppressed_messages: int = 0
    # Training data is read from MindSpore's worker threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def note(self, msg: str) -> None:
        """Keep `msg` and log it as a warning on ``src.data``; past :data:`MAX_MESSAGES`, only
        count it (and debug-log it)."""
        with self._lock:
            if len(self.messages) < MAX_MESSAGES:
                self.messages.append(msg)
                logger.warning(msg)
                if len(self.messages) == MAX_MESSAGES:
                    logger.warning("further data messages are counted but not shown")
            else:
                self.suppressed_messages += 1
                logger.debug(msg)

    @property
    def message_count(self) -> int:
        """All messages noted, shown or not."""
        return len(self.messages) + self.suppressed_messages
