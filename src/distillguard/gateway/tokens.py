"""Counting prompt tokens before admission, so token limits can reserve them.

The bundled model's tokenizer (the `tokenizers` library, no torch) is the
reference. Upstream models tokenise differently, so the count is an estimate
there; the gateway reconciles with the upstream's reported usage afterwards.
Without the tokenizer cache (a light install that never ran the model) a
byte-based estimate is used instead (one token per 3 UTF-8 bytes); either
way the reservation is replaced by the real usage once the answer is in.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distillguard.errors import DistillguardError

log = logging.getLogger(__name__)

# Chat formats add a few tokens per message (role markers, separators);
# OpenAI's own accounting uses 3-4 per message plus 3 to prime the answer.
PER_MESSAGE = 4
PER_REQUEST = 3
BYTES_PER_TOKEN = 3  # fallback estimate; settle() corrects it with real usage


class TokenCounter:
    def __init__(self, tokenizer=None) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def bundled(cls, cache_dir: Path) -> TokenCounter:
        """The bundled tokenizer if it is available, else the byte estimate (logged once)."""
        from distillguard.engine.bundled import load_text_tokenizer

        try:
            return cls(load_text_tokenizer(cache_dir))
        except DistillguardError as exc:
            log.warning("token counts are byte estimates: %s", exc)
            return cls(None)

    def count(self, texts: list[str], chat: bool) -> int:
        """Tokens of `texts`; `chat` adds the per-message framing of a chat request."""
        if self.tokenizer is None:
            total = sum(-(-len(t.encode()) // BYTES_PER_TOKEN) for t in texts)
        else:
            encode = self.tokenizer.encode  # per text: batching costs more for short prompts
            total = sum(len(encode(t, add_special_tokens=False).ids) for t in texts)
        if chat:
            total += PER_MESSAGE * len(texts) + PER_REQUEST
        return total
