"""Exchange speed: the hub's ingest, a member's pull, and matching shared indicators.

    python benchmarks/exchange_bench.py [--objects 20000] [--local 1000000] [--shared 100000]

Side by side in one run, each beside the floor it cannot beat on this machine:

* **hub ingest**: `distillguard hub serve` (SQLite) on loopback; a member posts
  envelopes of 1,000 account indicators through `HubClient` (the OASIS taxii2-client):
  parsing, validation, TLP, versions, corroboration, status and audit included
  (target >= 5,000 objects/s). Floor: the same rows bulk-inserted straight into the
  hub's objects table.
* **pull**: those objects paged from the hub into a gateway watchlist (`Watchlist.pull`).
* **matching**: `--local` account identifier hashes (one per account) against
  `--shared` shared indicators, 1 % of them ours: `Watchlist.matches()`, the SQL join a
  pull runs over every account (target: 1M against 100k in <= 2 s). Floor: a Python
  set intersection of the same hex strings, already in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert, select

from common import ROOT, save
from distillguard.config import ExchangeSettings
from distillguard.exchange import tlp
from distillguard.exchange.client import HubClient
from distillguard.exchange.hub.schema import collections as hub_collections
from distillguard.exchange.hub.schema import metadata as hub_metadata
from distillguard.exchange.hub.schema import objects as hub_objects
from distillguard.exchange.privacy import KeyRing
from distillguard.exchange.watchlist import Watchlist
from distillguard.store import open_engine
from distillguard.store.schema import account_identifiers, accounts

sys.path.insert(0, str(ROOT))
from tests.gateway_stack import _wait_healthy
from tests.helpers import EXE, run
from tests.servers import free_port

NOW = "2026-11-01T00:00:00.000Z"
CHUNK = 50_000


def indicator(digest: str) -> dict:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid4()}",
        "created": NOW,
        "modified": NOW,
        "valid_from": NOW,
        "pattern": f"[user-account:user_id = '{digest}']",
        "pattern_type": "stix",
        "indicator_types": ["malicious-activity"],
        "confidence": 80,
        "x_distillguard_kind": "account",
        "object_marking_refs": [tlp.MARKING_IDS["amber"]],
    }


def timed(label: str, work) -> float:
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.2f} s", flush=True)
    return seconds


def hub_rounds(directory: Path, n: int, ring: KeyRing) -> dict[str, float]:
    store = f"sqlite:///{directory / 'hub.db'}"
    run("hub", "collection", "add", "signals", "--store", store)
    token = run(
        "hub",
        "member",
        "add",
        "bench",
        "--read",
        "signals",
        "--write",
        "signals",
        "--store",
        store,
    ).stdout.strip()
    payload = [indicator(ring.hash("email", f"user{i}@example.org")) for i in range(n)]
    port = free_port()
    hub = subprocess.Popen([EXE, "hub", "serve", "--port", str(port), "--store", store])
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/taxii2/", hub)
        client = HubClient(f"http://127.0.0.1:{port}/api/", "signals", token)
        posted = {}
        ingest_s = timed("hub ingest", lambda: posted.setdefault("r", client.publish(payload)))
        assert len(posted["r"].accepted) == n and not posted["r"].failures, posted["r"]
        watchlist = Watchlist(
            open_engine(f"sqlite:///{directory / 'member.db'}"), ring, ExchangeSettings()
        )
        got = {}
        pull_s = timed("pull", lambda: got.setdefault("r", watchlist.pull(client)))
        assert got["r"].ingested.indicators == n, got["r"].ingested
    finally:
        hub.terminate()
        hub.wait(timeout=30)
    # The floor: the same rows again (new ids), straight into the same table.
    floor = open_engine(store, schema=hub_metadata)
    with floor.connect() as conn:
        collection = conn.execute(select(hub_collections.c.collection_id)).scalar()
    rows = [
        {
            "collection_id": collection,
            "object_id": f"indicator--{uuid.uuid4()}",
            "type": "indicator",
            "version": NOW,
            "spec_version": "2.1",
            "added_us": i,
            "publisher": "bench",
            "publisher_org": "bench",
            "tlp": "amber",
            "body": json.dumps(o),
        }
        for i, o in enumerate(payload)
    ]

    def bulk() -> None:
        with floor.begin() as conn:
            conn.execute(insert(hub_objects), rows)

    floor_s = timed("raw insert (floor)", bulk)
    return {"objects": n, "ingest_s": ingest_s, "pull_s": pull_s, "floor_s": floor_s}


def matching(directory: Path, local: int, shared: int, ring: KeyRing) -> dict[str, float]:
    engine = open_engine(f"sqlite:///{directory / 'match.db'}")
    ours = [ring.hash("email", f"customer{i}@example.com") for i in range(local)]
    overlap = shared // 100
    theirs = ours[:overlap] + [
        ring.hash("email", f"other{i}@example.net") for i in range(shared - overlap)
    ]
    print(f"storing {local:,} accounts and their hashes ...", flush=True)
    with engine.begin() as conn:
        for start in range(0, local, CHUNK):
            ids = range(start, min(start + CHUNK, local))
            conn.execute(
                insert(accounts),
                [{"account_id": f"a{i}", "tier": "normal", "updated_at": 0.0} for i in ids],
            )
            conn.execute(
                insert(account_identifiers),
                [
                    {"account_id": f"a{i}", "hash": ours[i], "kind": "email", "added_at": 0.0}
                    for i in ids
                ],
            )
    watchlist = Watchlist(engine, ring, ExchangeSettings(lifetime_days=10_000))
    objects = [indicator(h) for h in theirs]
    ingest_s = timed(f"watchlist ingest of {shared:,}", lambda: watchlist.ingest(objects))
    found = {}
    match_s = timed("matches() (SQL join)", lambda: found.setdefault("m", watchlist.matches()))
    assert len(found["m"]) == overlap, len(found["m"])
    common = {}
    mine, shared_set = set(ours), set(theirs)
    floor_s = timed("set intersection (floor)", lambda: common.setdefault("c", mine & shared_set))
    assert len(common["c"]) == overlap
    return {
        "local_hashes": local,
        "shared_indicators": shared,
        "matches": overlap,
        "watchlist_ingest_s": ingest_s,
        "match_s": match_s,
        "floor_s": floor_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--local", type=int, default=1_000_000)
    parser.add_argument("--shared", type=int, default=100_000)
    args = parser.parse_args()
    ring = KeyRing.generate("k1")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        hub = hub_rounds(directory, args.objects, ring)
        match = matching(directory, args.local, args.shared, ring)
    n = hub["objects"]
    print(f"\n{os.cpu_count()} cpu; SQLite\n")
    print("| step | seconds | objects/s | × floor |")
    print("|---|---|---|---|")
    print(
        f"| hub ingest ({n:,} indicators, envelopes of 1,000) | {hub['ingest_s']:.2f} | "
        f"{n / hub['ingest_s']:,.0f} | {hub['ingest_s'] / hub['floor_s']:.1f} |"
    )
    print(f"| pull into a watchlist | {hub['pull_s']:.2f} | {n / hub['pull_s']:,.0f} | |")
    print(
        f"| raw insert into the hub table (floor) | {hub['floor_s']:.2f} | "
        f"{n / hub['floor_s']:,.0f} | 1.0 |"
    )
    print(
        f"| match {match['local_hashes']:,} hashes × {match['shared_indicators']:,} "
        f"indicators | {match['match_s']:.2f} | | {match['match_s'] / match['floor_s']:.1f} |"
    )
    print(f"| set intersection (floor) | {match['floor_s']:.2f} | | 1.0 |")
    print(json.dumps({"hub": hub, "matching": match}))
    print(f"wrote {save('exchange_bench', {'hub': hub, 'matching': match})}")


if __name__ == "__main__":
    main()
