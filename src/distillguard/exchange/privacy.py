"""Maximum signal, minimum disclosure: what a provider may publish about an abuser.

Members match each other's indicators without revealing who their customers are:
identifiers (emails, phones, payment fingerprints) travel only as HMACs under a key
the consortium shares, and prompt templates only as MinHash signatures seeded from
that key. An outsider who obtains a bundle can neither read the identifiers nor test
guesses of them offline. Keys rotate: members publish under the current key and
match under every key they still hold.

`check_shareable` is the last line of defence: run on every object before it
leaves the house, it refuses any raw identifier that slipped into a description,
a pattern or a custom property.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distillguard.errors import DistillguardError
from distillguard.tracing import minhash


class ExchangeError(DistillguardError):
    """A key file, an identifier or an object to publish is malformed or not shareable."""


KINDS = frozenset({"email", "phone", "payment"})
MIN_SECRET_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_HASH = re.compile(r"[A-Za-z0-9_.-]{1,32}:[0-9a-f]{64}")
_GMAIL = frozenset({"gmail.com", "googlemail.com"})


@dataclass(frozen=True)
class ConsortiumKey:
    key_id: str
    secret: bytes = field(repr=False)  # never printed into a log

    def __post_init__(self) -> None:
        _check_key_id(self.key_id)
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ExchangeError(
                f"consortium key {self.key_id!r}: the secret has {len(self.secret)} bytes, "
                f"at least {MIN_SECRET_BYTES} are needed"
            )


class KeyRing:
    """The consortium keys a member holds: `current` to publish, all of them to match."""

    def __init__(self, keys: Iterable[ConsortiumKey], current: str) -> None:
        self.keys = {key.key_id: key for key in keys}
        if current not in self.keys:
            raise ExchangeError(f"the current consortium key {current!r} is not in the key ring")
        self.current = self.keys[current]

    @classmethod
    def generate(cls, key_id: str) -> KeyRing:
        """A ring holding one new random 32-byte key."""
        return cls([ConsortiumKey(key_id, secrets.token_bytes(32))], key_id)

    def rotated(self, key_id: str) -> KeyRing:
        """This ring plus a new random key that becomes current; the old keys still match."""
        if key_id in self.keys:
            raise ExchangeError(f"the key ring already holds a key {key_id!r}")
        fresh = ConsortiumKey(key_id, secrets.token_bytes(32))
        return KeyRing([*self.keys.values(), fresh], key_id)

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        """Read `{"current": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}`."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExchangeError(f"consortium key file {path} does not exist") from None
        except OSError as e:
            raise ExchangeError(f"cannot read consortium key file {path}: {e.strerror}") from None
        except ValueError as e:  # bad JSON or bad UTF-8
            raise ExchangeError(f"consortium key file {path} is not valid JSON: {e}") from None
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("current"), str)
            and isinstance(doc.get("keys"), dict)
            and all(isinstance(s, str) for s in doc["keys"].values())
        ):
            raise ExchangeError(
                f'consortium key file {path} must hold {{"current": "<key id>", '
                f'"keys": {{"<key id>": "<base64 secret>", ...}}}}'
            )
        keys = []
        for key_id, encoded in doc["keys"].items():
            try:
                secret = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ExchangeError(
                    f"consortium key file {path}: the secret of {key_id!r} is not base64"
                ) from None
            keys.append(ConsortiumKey(key_id, secret))
        return cls(keys, doc["current"])

    def save(self, path: str | Path) -> None:
        """Write the ring, readable by its owner only (mode 0600), replacing any old file
        in one step so that a crash never leaves half a key file."""
        path = Path(path)
        doc = {
            "current": self.current.key_id,
            "keys": {k: base64.b64encode(key.secret).decode() for k, key in self.keys.items()},
        }
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a leftover partial file keeps its old mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
        os.replace(partial, path)

    def key(self, key_id: str) -> ConsortiumKey:
        """The key an indicator was published under (its hash's or signature's prefix)."""
        try:
            return self.keys[key_id]
        except KeyError:
            raise ExchangeError(f"no consortium key {key_id!r} in the key ring") from None

    def hash(self, kind: str, value: str) -> str:
        """The identifier's hash under the current key: what to publish."""
        return identifier_hash(self.current, kind, value)

    def minhash_seed(self, key_id: str) -> int:
        """The keyed MinHash seed of a key held (what `keyed_signature` uses)."""
        return _minhash_seed(self.key(key_id))

    def hashes(self, kind: str, value: str) -> list[str]:
        """Its hash under every key held, current first: what to match indicators against."""
        normalised = _normalise(kind, value)
        keys = [self.current, *(k for k in self.keys.values() if k is not self.current)]
        return [_hmac_hash(key, kind, normalised) for key in keys]


def _check_key_id(key_id: str) -> None:
    if not (isinstance(key_id, str) and _KEY_ID.fullmatch(key_id)):
        raise ExchangeError(f"consortium key id {key_id!r} is not 1-32 of [A-Za-z0-9_.-]")


# Identifiers -----------------------------------------------------------------------------


def normalise_email(value: str) -> str:
    """One address, however written: Gmail ignores dots and `+tags`, every provider
    here is treated as ignoring `+tags` (sub-addressing), and case never matters."""
    local, _, domain = value.strip().lower().partition("@")
    local = local.split("+", 1)[0]
    if domain in _GMAIL:
        local, domain = local.replace(".", ""), "gmail.com"
    if value.count("@") != 1 or not (local and domain):
        raise ExchangeError("not an email address")  # the value itself is not echoed
    return f"{local}@{domain}"


def normalise_phone(value: str) -> str:
    """Digits only, with the leading `+` of an international number kept."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 7:
        raise ExchangeError("not a phone number: fewer than 7 digits")
    return ("+" if value.strip().startswith("+") else "") + digits


def normalise_payment(value: str) -> str:
    """A card number or a processor's payment fingerprint, without case or grouping."""
    normalised = re.sub(r"[\s-]", "", value.lower())
    if not normalised:
        raise ExchangeError("empty payment identifier")
    return normalised


_NORMALISERS = {"email": normalise_email, "phone": normalise_phone, "payment": normalise_payment}


def _normalise(kind: str, value: str) -> str:
    if kind not in KINDS:
        raise ExchangeError(f"unknown identifier kind {kind!r}: one of {', '.join(sorted(KINDS))}")
    return _NORMALISERS[kind](value)


def _hmac_hash(key: ConsortiumKey, kind: str, normalised: str) -> str:
    # The kind is hashed too: a phone number and a payment id with the same digits differ.
    digest = hmac.new(key.secret, f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()
    return f"{key.key_id}:{digest}"


def identifier_hash(key: ConsortiumKey, kind: str, value: str) -> str:
    """`"<key id>:<hex HMAC-SHA256>"` of a normalised identifier of a kind in KINDS."""
    return _hmac_hash(key, kind, _normalise(kind, value))


def is_identifier_hash(text: str) -> bool:
    """Whether `text` has the shape `identifier_hash` gives (and so no raw identifier)."""
    return bool(_HASH.fullmatch(text))


# Keyed MinHash ---------------------------------------------------------------------------


def _minhash_seed(key: ConsortiumKey) -> int:
    digest = hmac.new(key.secret, b"minhash", hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "little")


def keyed_signature(key: ConsortiumKey, texts: Sequence[str]) -> np.ndarray:
    """(len(texts), NUM_BINS) MinHash signatures only holders of `key` can reproduce.

    The 64-bit seed is secret (an HMAC of the key), so an outsider cannot test guesses
    of a prompt against a published signature. splitmix64 is no cryptographic PRF, so
    this stops guessing, not a cryptanalyst who also holds prompts with their signatures.
    """
    return minhash.signatures(texts, seed=_minhash_seed(key))


def encode_signature(key_id: str, signature_row: np.ndarray) -> str:
    """`"<key id>:<base64url, unpadded, of the NUM_BINS uint32 little-endian>"`."""
    _check_key_id(key_id)
    row = np.asarray(signature_row)
    if row.shape != (minhash.NUM_BINS,) or row.dtype != np.uint32:
        raise ExchangeError(
            f"a signature is {minhash.NUM_BINS} uint32, not {row.shape} {row.dtype}"
        )
    text = base64.urlsafe_b64encode(row.astype("<u4").tobytes()).rstrip(b"=").decode()
    return f"{key_id}:{text}"


_SIGNATURE = re.compile(r"([A-Za-z0-9_.-]{1,32}):([A-Za-z0-9_-]+)")
_SIGNATURE_CHARS = -(-minhash.NUM_BINS * 4 * 4 // 3)  # unpadded base64 of NUM_BINS uint32


def decode_signature(text: str) -> tuple[str, np.ndarray]:
    """The key id and signature row of an `encode_signature` string."""
    match = _SIGNATURE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ExchangeError("not a keyed MinHash signature: expected '<key id>:<base64url>'")
    key_id, body = match.groups()
    if len(body) != _SIGNATURE_CHARS:
        raise ExchangeError(
            f"keyed MinHash signature of {len(body)} characters, expected {_SIGNATURE_CHARS}"
        )
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return key_id, np.frombuffer(raw, "<u4").astype(np.uint32)


# The pre-publish check ------------------------------------------------------------------

# Every detector matches whole tokens only: the lookbehinds and lookaheads keep them off
# digits inside STIX ids (uuids), hex HMAC digests, base64url signatures, ISO timestamps
# and decimal numbers. Groups after the first need a separator, so matching stays linear.
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
_PHONE = re.compile(
    r"(?<![\w.+-])(?:"
    r"\+\d+(?:[ .-]?\(\d+\)|[ .-]\d+)*"  # international: +44 20 7946 0958, +1 (555) 010-2030
    r"|(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # North American: 555-010-2030
    r"|(?:0\d+|\(0\d+\) ?\d+)(?:[ .-]\d+)*"  # national, trunk prefix 0: 030 1234567
    r")(?![\w+-]|[.,]\d)"
)
_DATE = re.compile(r"\d{1,2}[.-]\d{1,2}[.-]\d{2,4}")  # 05.03.2024 has a phone's shape
_CARD = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?![\w+-]|[.,]\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?!\w|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})"
    r"(?:/\d{1,3})?(?![\w:]|\.\w)"
)


def check_shareable(obj: dict, allow_ip: bool = False) -> None:
    """Refuse (ExchangeError naming the JSON path) an object holding a raw email address,
    phone number, payment card number or, unless `allow_ip`, an IP address or CIDR.

    Every string is read, dictionary keys included, at any depth: descriptions,
    patterns, custom properties and extensions alike. The value is not echoed.
    """
    for path, text in _strings(obj, "$"):
        kind = _raw_identifier(text, allow_ip)
        if kind is not None:
            hint = "only with allow_ip" if kind == "IP address" else "hash it with a KeyRing"
            raise ExchangeError(f"refusing to publish a raw {kind} at {path} ({hint})")


def _strings(node: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield f"a key of {path}", str(key)
            yield from _strings(value, _child(path, str(key)))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def _child(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    # A key is only named if it is itself harmless (it was checked first).
    return f"{path}[{json.dumps(key)}]"


def _raw_identifier(text: str, allow_ip: bool) -> str | None:
    """The kind of the first raw identifier in `text`, if any."""
    if "@" in text and _EMAIL.search(text):
        return "email address"
    for match in _CARD.finditer(text):
        if _luhn(re.sub(r"\D", "", match.group())):
            return "payment card number"
    for match in _PHONE.finditer(text):
        digits = sum(c.isdigit() for c in match.group())
        if 7 <= digits <= 15 and not _DATE.fullmatch(match.group()):
            return "phone number"
    if not allow_ip:
        for match in (*_IPV4.finditer(text), *_IPV6.finditer(text)):
            if _is_ip(match.group()):
                return "IP address"
    return None


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
