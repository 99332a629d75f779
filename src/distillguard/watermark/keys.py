"""Watermark keys: a 256-bit secret with a public id, stored as a 0600 JSON file.

Sub-keys are derived with HMAC-SHA256 so that one master key yields a
deterministic key per account cohort; a detector that holds the master key can
re-derive every cohort key and tell which cohort's outputs a student learned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distillguard.errors import KeyFileError, KeyFileExistsError

KEY_FORMAT = "distillguard-watermark-key/1"
SECRET_BYTES = 32


@dataclass(frozen=True)
class WatermarkKey:
    """A secret watermark key. `repr` and `str` never show the secret."""

    secret: bytes = field(repr=False)
    key_id: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise KeyFileError("watermark key secret must be at least 128 bits")

    @classmethod
    def generate(cls, params: dict[str, Any] | None = None) -> WatermarkKey:
        secret = secrets.token_bytes(SECRET_BYTES)
        return cls(secret=secret, key_id=_public_id(secret), params=dict(params or {}))

    def derive(self, label: str) -> WatermarkKey:
        """Deterministic sub-key, e.g. ``key.derive("cohort-17")``."""
        if not label:
            raise ValueError("derive() needs a non-empty label")
        secret = hmac.new(self.secret, b"distillguard/derive/" + label.encode(), "sha256").digest()
        return WatermarkKey(secret=secret, key_id=f"{self.key_id}/{label}", params=self.params)

    def subkey_bytes(self, purpose: str, n: int = 8) -> bytes:
        """`n` pseudo-random bytes bound to this key and a purpose string."""
        return hmac.new(self.secret, b"distillguard/" + purpose.encode(), "sha256").digest()[:n]

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write atomically with mode 0600: a crash never leaves a half-written key.

        Without `overwrite` the complete file is hard-linked into place, which fails if
        any file is there: of processes saving at once, exactly one wins and the others
        get KeyFileExistsError (no check-then-replace window).
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise KeyFileExistsError(f"{path} already exists (use --force to overwrite)")
        document = {
            "format": KEY_FORMAT,
            "key_id": self.key_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "secret": self.secret.hex(),
            "watermark": self.params,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(document, fh, indent=2)
                fh.write("\n")
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
        except FileExistsError:
            raise KeyFileExistsError(f"{path} already exists (use --force to overwrite)") from None
        except OSError as exc:
            raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> WatermarkKey:
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyFileError(f"key file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise KeyFileError(f"key file {path} is not valid JSON (line {exc.lineno})") from None
        if not isinstance(document, dict) or document.get("format") != KEY_FORMAT:
            raise KeyFileError(f"{path} is not a distillguard watermark key ({KEY_FORMAT})")
        try:
            secret = bytes.fromhex(document["secret"])
            key_id = str(document["key_id"])
        except (KeyError, TypeError, ValueError):
            raise KeyFileError(f"key file {path}: missing or malformed secret/key_id") from None
        if len(secret) < 16:
            raise KeyFileError(f"key file {path}: secret is shorter than 128 bits")
        params = document.get("watermark") or {}
        if not isinstance(params, dict):
            raise KeyFileError(f"key file {path}: 'watermark' must be an object")
        return cls(secret=secret, key_id=key_id, params=params)


def _public_id(secret: bytes) -> str:
    """A short id that names the key without revealing it (a one-way hash)."""
    return "wk_" + hashlib.sha256(b"distillguard/key-id/" + secret).hexdigest()[:16]
