"""A one-off overlap check between two members: how many identifiers they share, nothing more.

Private set intersection (OpenMined's ECDH-PSI, `openmined-psi`, the `psi` extra) over
the members' keyed identifier hashes, in three files carried between them by any means:

    B: request(B's hashes)            -> request file (+ B's secret key, kept by B)
    A: respond(request, A's hashes)   -> response file
    B: overlap(response, secret key)  -> the number of hashes both hold

B learns the size of the overlap (and about how many hashes A has); A learns how many B
has; neither learns which ones. The sets are consortium-keyed hashes already, so even a
broken PSI would show HMACs, never identifiers. A limit no PSI removes: B holds the
consortium key, so a request padded around one guessed identifier tells B whether A
has it. Answer requests from members you would tell that much anyway.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distillguard.exchange.privacy import ExchangeError

FORMAT = "distillguard-psi/1"
FALSE_POSITIVE_RATE = 1e-9  # per query of the whole client set
MAX_ITEMS = 100_000_000


def _psi() -> Any:
    try:
        import private_set_intersection.python as psi
    except ImportError:
        raise ExchangeError(
            "private set intersection needs the `psi` extra: pip install 'distillguard[psi]'"
        ) from None
    return psi


def request(hashes: Sequence[str]) -> tuple[bytes, dict]:
    """(the secret key B keeps, the request document B sends)."""
    if not hashes:
        raise ExchangeError("no identifier hashes to compare")
    psi = _psi()
    client = psi.client.CreateWithNewKey(False)  # False: reveal the size only
    message = client.CreateRequest(sorted(set(hashes)))
    return client.GetPrivateKeyBytes(), {
        "format": FORMAT,
        "kind": "request",
        "items": len(set(hashes)),
        "request": _b64(message.SerializeToString()),
    }


def respond(document: dict, hashes: Sequence[str]) -> dict:
    """A's answer to B's request document, over A's hashes."""
    psi = _psi()
    body = _check(document, "request")
    items = body.get("items")
    if isinstance(items, bool) or not isinstance(items, int) or not 1 <= items <= MAX_ITEMS:
        raise ExchangeError(f"a PSI request's `items` must be an integer from 1 to {MAX_ITEMS:,}")
    if not hashes:
        raise ExchangeError("no identifier hashes to compare")
    with _unreadable("the PSI request"):
        server = psi.server.CreateWithNewKey(False)
        incoming = psi.Request()
        incoming.ParseFromString(_unb64(body.get("request")))
        setup = server.CreateSetupMessage(FALSE_POSITIVE_RATE, items, sorted(set(hashes)))
        response = server.ProcessRequest(incoming)
    return {
        "format": FORMAT,
        "kind": "response",
        "setup": _b64(setup.SerializeToString()),
        "response": _b64(response.SerializeToString()),
    }


def overlap(document: dict, secret_key: bytes) -> int:
    """How many hashes both members hold, from A's response and B's secret key."""
    psi = _psi()
    body = _check(document, "response")
    with _unreadable("the PSI response (or its key)"):
        client = psi.client.CreateFromKey(secret_key, False)
        setup, response = psi.ServerSetup(), psi.Response()
        setup.ParseFromString(_unb64(body.get("setup")))
        response.ParseFromString(_unb64(body.get("response")))
        return int(client.GetIntersectionSize(setup, response))


@contextlib.contextmanager
def _unreadable(what: str) -> Iterator[None]:
    """The library's errors, as one line that echoes none of the data (which the
    library's own messages may quote)."""
    try:
        yield
    except ExchangeError:
        raise
    except Exception:  # protobuf DecodeError, RuntimeError from C++, TypeError, ...
        raise ExchangeError(f"{what} cannot be read: not made by `exchange psi`?") from None


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExchangeError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ExchangeError(f"{path} is not a PSI document: {exc}") from None


def _check(document: dict, kind: str) -> dict:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ExchangeError(f"not a {FORMAT} document")
    if document.get("kind") != kind:
        raise ExchangeError(f"expected a PSI {kind}, got a {document.get('kind')!r}")
    return document


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise ExchangeError("a PSI document field is not base64") from None
