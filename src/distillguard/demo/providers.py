"""The demo's two providers and their hub: keys, stores, settings, and the servers each
runs (real `distillguard serve` and `hub serve` processes, and the synthetic backend)."""

from __future__ import annotations

import json
import secrets
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from distillguard.config import ExchangeSettings
from distillguard.demo.cast import Cast
from distillguard.demo.services import Server, distillguard, free_port
from distillguard.exchange.hub.schema import metadata as hub_schema
from distillguard.exchange.hub.store import HubStore
from distillguard.exchange.privacy import KeyRing
from distillguard.exchange.watchlist import Watchlist
from distillguard.store import AccountStore, open_engine
from distillguard.watermark import WatermarkKey
from distillguard.watermark.cohorts import Cohorts

COHORTS = 8
# Limits on the demo's compressed clock (a simulated day in under a minute): every
# legitimate account's pace fits `normal` with room to spare; `throttle` (x 0.1) does not
# fit a harvester's.
LIMITS = {"rpm": 3_000, "tpm": 5_000_000, "tpd": None, "concurrency": 64}
ORG_LIMITS = {"rpm": 30_000, "tpm": 50_000_000, "tpd": None, "concurrency": 640}
TIERS = {"watch_at": 0.3, "throttle_at": 0.5, "block_at": 0.9}


@dataclass
class Providers:
    """The two providers and the hub: their stores, keys and settings."""

    out: Path
    people: Cast
    key: WatermarkKey
    ring: KeyRing
    hub_tokens: dict[str, str]
    api_keys: dict[str, str]
    admin_token: str = ""  # both gateways' (the console's), in `admin-token` (0600)
    hub_url: str = ""  # once started

    @property
    def key_file(self) -> Path:
        return self.out / "watermark-key.json"

    @property
    def hub_store(self) -> str:
        return f"sqlite:///{self.out / 'hub.db'}"

    @property
    def cohorts(self) -> Cohorts:
        return Cohorts(self.key, COHORTS)

    def store(self, provider: str) -> str:
        return f"sqlite:///{self.out / f'provider-{provider}.db'}"

    @classmethod
    def create(cls, out: Path, people: Cast) -> Providers:
        key = WatermarkKey.generate()
        key.save(out / "watermark-key.json")  # the gateway's master key
        ring = KeyRing.generate("demo")
        ring.save(out / "consortium.key")
        hub = HubStore(
            open_engine(f"sqlite:///{out / 'hub.db'}", schema=hub_schema)
        )  # as `hub collection add`, `hub member add`
        hub.add_collection("signals", "distillation signals")
        tokens = {
            p: hub.add_member(f"provider-{p}", read=["signals"], write=["signals"])
            for p in ("a", "b")
        }
        token = secrets.token_urlsafe(32)
        token_file = out / "admin-token"
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
        world = cls(out, people, key, ring, tokens, {}, token)
        # Provider A's customers: a key each, and the identifiers they signed up with.
        engine = open_engine(world.store("a"))
        accounts = AccountStore(engine)
        watchlist = Watchlist(engine, ring, world.exchange("a"))
        for account_id, signup in people.accounts.items():
            world.api_keys[account_id] = accounts.issue_key(
                account_id, signup.get("org_id")
            ).api_key
            given = [("email", signup["email"]), ("payment", signup["payment_fingerprint"])]
            watchlist.identify(account_id, given, apply=False)
        with (out / "provider-a-accounts.jsonl").open("w") as handle:
            for signup in people.accounts.values():
                handle.write(json.dumps(signup) + "\n")
        return world

    def exchange(self, provider: str, hub: str | None = None) -> ExchangeSettings:
        return ExchangeSettings(
            hub=hub,
            collection="signals",
            token=self.hub_tokens[provider],
            keyring=self.out / "consortium.key",
            publisher=f"provider-{provider}",
        )

    def env(self, provider: str) -> dict[str, str]:
        limits = json.dumps(LIMITS)
        return {
            "HF_HUB_OFFLINE": "1",
            "DISTILLGUARD_GATEWAY__ADMIN_TOKEN": self.admin_token,
            "DISTILLGUARD_GATEWAY__TRUSTED_PROXIES": '["127.0.0.1"]',
            "DISTILLGUARD_GATEWAY__COHORTS": str(COHORTS),
            "DISTILLGUARD_GATEWAY__KEY_REFRESH_SECONDS": "0.5",
            "DISTILLGUARD_GATEWAY__LIMITS__KEY": limits,
            "DISTILLGUARD_GATEWAY__LIMITS__ACCOUNT": limits,
            "DISTILLGUARD_GATEWAY__LIMITS__ORG": json.dumps(ORG_LIMITS),
            **{f"DISTILLGUARD_TRACING__{k.upper()}": str(v) for k, v in TIERS.items()},
            "DISTILLGUARD_EXCHANGE__HUB": self.hub_url,
            "DISTILLGUARD_EXCHANGE__COLLECTION": "signals",
            "DISTILLGUARD_EXCHANGE__TOKEN": self.hub_tokens[provider],
            "DISTILLGUARD_EXCHANGE__KEYRING": str(self.out / "consortium.key"),
            "DISTILLGUARD_EXCHANGE__PUBLISHER": f"provider-{provider}",
        }

    def start(self, servers: ExitStack) -> dict[str, str]:
        """The synthetic backend, the hub and both gateways, started together (the model's
        load is most of the wait); their URLs."""
        logs = self.out / "logs"
        ports = {name: free_port() for name in ("synthetic", "hub", "a", "b")}
        synthetic = f"http://127.0.0.1:{ports['synthetic']}/v1"
        hub_root = f"http://127.0.0.1:{ports['hub']}"
        self.hub_url = f"{hub_root}/api/"
        launches = [
            (
                "synthetic-backend",
                [sys.executable, "-m", "distillguard.demo.synthetic"],
                ["--port", str(ports["synthetic"])],
                f"{synthetic}/models",
                {},
            ),
            (
                "hub",
                distillguard("hub", "serve", "--store", self.hub_store),
                ["--host", "127.0.0.1", "--port", str(ports["hub"])],
                f"{hub_root}/taxii2/",
                {},
            ),
        ]
        for provider in ("a", "b"):
            engine = ["--engine", "bundled"] if provider == "a" else []
            launches.append(
                (
                    f"gateway-{provider}",
                    distillguard("serve", *engine, "--upstream", synthetic),
                    [
                        *("--host", "127.0.0.1", "--port", str(ports[provider])),
                        *("--store", self.store(provider), "--watermark-key", str(self.key_file)),
                    ],
                    f"http://127.0.0.1:{ports[provider]}/healthz",
                    self.env(provider),
                )
            )
        started = []
        for name, command, options, health, env in launches:
            server = Server(name, [*command, *options], health, logs / f"{name}.log", env)
            servers.callback(server.stop)  # stopped whatever happens next
            started.append(server)
        for server in started:
            server.wait()
        return {
            "a": f"http://127.0.0.1:{ports['a']}/v1",
            "b": f"http://127.0.0.1:{ports['b']}/v1",
        }
