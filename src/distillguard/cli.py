"""The `distillguard` command: thin sub-commands over the library modules.

Results go to stdout (JSON where a program reads them); progress and notes go
to stderr. Input and configuration errors print one line and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillguard.config import Settings, load_settings
from distillguard.errors import DistillguardError, VocabularyMismatchError
from distillguard.watermark import Watermark, WatermarkConfig, WatermarkKey

EXIT_USAGE = 2

app = typer.Typer(
    help="Defend an LLM API against adversarial distillation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
watermark_app = typer.Typer(help="Watermark keys and detection.", no_args_is_help=True)
app.add_typer(watermark_app, name="watermark")
keys_app = typer.Typer(help="Gateway API keys: issue, revoke, list.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
accounts_app = typer.Typer(help="Accounts: risk tiers and limits.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
orgs_app = typer.Typer(help="Organisations: limits.", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs")
events_app = typer.Typer(help="The gateway's request events.", no_args_is_help=True)
app.add_typer(events_app, name="events")
trace_app = typer.Typer(
    help="Behavioural tracing: distillation risk per account and cluster.", no_args_is_help=True
)
app.add_typer(trace_app, name="trace")

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="Database URL (default: the configured store, else SQLite)."),
]

RpmOption = Annotated[int | None, typer.Option(help="Requests per minute.")]
TpmOption = Annotated[int | None, typer.Option(help="Tokens per minute.")]
TpdOption = Annotated[int | None, typer.Option(help="Tokens per day.")]
ConcurrencyOption = Annotated[int | None, typer.Option(help="Concurrent requests.")]

err = Console(stderr=True)
screen = Console()


def main() -> None:
    """Console-script entry: user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    try:
        app()
    except DistillguardError as exc:
        print(f"distillguard: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        print("distillguard: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _conversion_notice(gguf: Path) -> None:
    err.print(f"[dim]first run: converting {gguf.name} to the local cache (one-off)…[/dim]")


def _engine(settings: Settings):
    from distillguard.engine.transformers_engine import TransformersEngine

    with err.status("loading the bundled model…"):
        return TransformersEngine.bundled(settings.cache_dir, on_convert=_conversion_notice)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


# -- generate -----------------------------------------------------------------------


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="A user message to answer.")] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="JSONL file of prompts (`prompt`, `turns` or `messages`).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Watermark key file; omit for no watermark.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="New tokens per answer.")] = None,
    temperature: Annotated[float | None, typer.Option(min=0.01)] = None,
    top_p: Annotated[float | None, typer.Option(min=0.01, max=1.0)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Answer prompts with the bundled model, watermarked when given a key."""
    from distillguard.engine.prompts import read_prompts

    if (prompt is None) == (prompts is None):
        raise DistillguardError("give either a PROMPT or --prompts FILE.jsonl")
    settings = load_settings()
    gen = settings.generation
    watermark = Watermark.from_key(WatermarkKey.load(key)) if key else None
    items = read_prompts(prompts) if prompts else [prompt]
    engine = _engine(settings)
    with _progress() as progress:
        task = progress.add_task("generating", total=len(items))
        completions = engine.generate(
            items,
            max_new_tokens=max_tokens or gen.max_new_tokens,
            temperature=temperature or gen.temperature,
            top_p=top_p or gen.top_p,
            batch_size=batch_size or gen.batch_size,
            watermark=watermark,
            seed=seed,
            on_batch=lambda n: progress.advance(task, n),
        )
    if not as_json and prompts is None:
        print(completions[0].text)
        return
    for item, completion in zip(items, completions, strict=True):
        record = {
            "prompt": item,
            "response": completion.text,
            "prompt_ids": completion.prompt_ids,
            "token_ids": completion.completion_ids,
            "finish_reason": completion.finish_reason,
            "watermark_key_id": watermark.key.key_id if watermark else None,
        }
        print(json.dumps(record, ensure_ascii=False))


# -- watermark keygen / detect ------------------------------------------------------


@watermark_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(help="Where to write the key (mode 0600).")],
    scheme: Annotated[str | None, typer.Option(help="kgw or gumbel.")] = None,
    gamma: Annotated[float | None, typer.Option(help="Green-list fraction (KGW).")] = None,
    delta: Annotated[float | None, typer.Option(help="Logit bias of green tokens (KGW).")] = None,
    context_width: Annotated[int | None, typer.Option(help="Previous tokens hashed (k).")] = None,
    vocab_size: Annotated[int | None, typer.Option(help="Vocabulary size of the model.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a new 256-bit watermark key with its parameters; prints only the key id."""
    defaults = load_settings().watermark.model_dump()
    config = WatermarkConfig.from_params(
        defaults,
        scheme=scheme,
        gamma=gamma,
        delta=delta,
        context_width=context_width,
        vocab_size=vocab_size,
    )
    key = WatermarkKey.generate(config.to_params())
    key.save(out, overwrite=force)
    err.print(
        f"wrote {out} ({config.scheme}, γ={config.gamma}, δ={config.delta}, "
        f"k={config.context_width})"
    )
    print(key.key_id)


@watermark_app.command("detect")
def detect(
    files: Annotated[
        list[str],
        typer.Argument(
            help="Text files, or .jsonl with `text`/`response` or `token_ids` (+ optional "
            "`prompt`/`prompt_ids`) per line; `-` reads stdin."
        ),
    ],
    key: Annotated[Path, typer.Option(help="Watermark key file.")],
) -> None:
    """Test texts for the watermark: one JSON object per input on stdout."""
    from distillguard.watermark.inputs import read_inputs, tokenize_inputs

    watermark = Watermark.from_key(WatermarkKey.load(key))
    items = read_inputs(files)
    encode = _encoder(watermark) if any(i.needs_tokenizer for i in items) else None
    pairs = tokenize_inputs(items, encode)
    results = watermark.detect_batch([p[0] for p in pairs], [p[1] for p in pairs])
    for item, result in zip(items, results, strict=True):
        if result.total_windows == 0:  # checked for all inputs before any output
            raise DistillguardError(
                f"{item.name}: too short for context width {watermark.config.context_width}"
            )
    for item, result in zip(items, results, strict=True):
        print(json.dumps({"input": item.name, "key_id": watermark.key.key_id, **result.to_dict()}))


def _encoder(watermark: Watermark):
    from distillguard.engine.bundled import load_text_tokenizer

    tokenizer = load_text_tokenizer(load_settings().cache_dir, on_convert=_conversion_notice)
    size = tokenizer.get_vocab_size()
    if size != watermark.config.vocab_size:
        raise VocabularyMismatchError(
            f"the bundled tokenizer has {size} tokens but the key was made for a "
            f"vocabulary of {watermark.config.vocab_size}; give token ids from the key's model"
        )
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


# -- demo -----------------------------------------------------------------------------

DEMO_PROMPTS = (
    "Explain why the sky is blue to a ten-year-old.",
    "Give me three practical tips for learning a new programming language.",
    "Describe how a bill becomes a law.",
)


@app.command()
def demo(
    max_tokens: Annotated[int, typer.Option(min=16, help="New tokens per answer.")] = 120,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Generate answers with and without a fresh watermark key and test them all."""
    settings = load_settings()
    key = WatermarkKey.generate(
        WatermarkConfig.from_params(settings.watermark.model_dump()).to_params()
    )
    watermark = Watermark.from_key(key)
    engine = _engine(settings)
    gen = settings.generation
    table = Table(
        title=f"watermark {key.key_id} ({watermark.config.scheme}, "
        f"γ={watermark.config.gamma}, δ={watermark.config.delta})"
    )
    for column in ("answer", "watermarked", "scored", "green", "p-value"):
        table.add_column(column, overflow="fold")
    with _progress() as progress:
        task = progress.add_task("generating", total=2 * len(DEMO_PROMPTS))
        for marked in (True, False):
            completions = engine.generate(
                list(DEMO_PROMPTS),
                max_new_tokens=max_tokens,
                temperature=gen.temperature,
                top_p=gen.top_p,
                watermark=watermark if marked else None,
                seed=seed,
                on_batch=lambda n: progress.advance(task, n),
            )
            for c in completions:
                r = watermark.detect(c.completion_ids, c.prompt_ids)
                preview = c.text.strip().replace("\n", " ")
                table.add_row(
                    preview[:70] + ("…" if len(preview) > 70 else ""),
                    "yes" if marked else "no",
                    str(r.scored),
                    f"{r.green_fraction:.0%}",
                    f"{r.p_value:.1e}",
                )
    Console().print(table)


# -- serve / keys / accounts / events ---------------------------------------------------


@app.command()
def serve(
    upstream: Annotated[
        str | None, typer.Option(help="Base URL of an OpenAI-compatible API to proxy.")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="`bundled`: answer with the bundled model.")
    ] = None,
    watermark_key: Annotated[
        Path | None, typer.Option(help="Watermark key file (default: the embedded key).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    store: StoreOption = None,
    redis: Annotated[
        str | None, typer.Option(help="redis:// URL: share limits across replicas.")
    ] = None,
    shadow: Annotated[
        bool | None, typer.Option("--shadow", help="Log limit and policy decisions, enforce none.")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes sharing the port (more than 1 needs --redis).")
    ] = 1,
) -> None:
    """Run the OpenAI-compatible gateway."""
    from distillguard.gateway.server import serve as run

    if engine not in (None, "bundled"):
        raise DistillguardError(f"unknown engine {engine!r}: the only engine is `bundled`")
    overrides = {
        "upstream": upstream,
        "engine": engine,
        "watermark_key": watermark_key,
        "host": host,
        "port": port,
        "store": store,
        "redis": redis,
        "shadow": shadow,
    }
    settings = load_settings()
    gateway = settings.gateway.model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )
    # The command line picks the backend: one flag there overrides the other's configured value.
    if upstream is not None and engine is None:
        gateway.engine = None
    if engine is not None and upstream is None:
        gateway.upstream = None
    settings = settings.model_copy(update={"gateway": gateway})
    run(settings, workers)


def _store_url(store: str | None) -> str:
    from distillguard.store import default_store_url

    return store or load_settings().gateway.store or default_store_url()


def _accounts(store: str | None):
    from distillguard.store import AccountStore, open_engine

    url = _store_url(store)
    return AccountStore(open_engine(url))


@keys_app.command("issue")
def keys_issue(
    account: Annotated[str, typer.Option(help="Account the key belongs to (created if new).")],
    org: Annotated[str | None, typer.Option(help="Organisation of the account.")] = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    tpd: TpdOption = None,
    concurrency: ConcurrencyOption = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    store: StoreOption = None,
) -> None:
    """Issue an API key; the secret key is printed once on stdout and never stored."""
    from distillguard.policy import Limits

    limits = Limits(rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency)
    issued = _accounts(store).issue_key(account, org, limits, name)
    err.print(f"issued key {issued.record.key_id} for account {account} (shown once)")
    print(issued.api_key)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after `dg-`).")],
    store: StoreOption = None,
) -> None:
    """Revoke a key; gateways stop accepting it within their refresh interval."""
    record = _accounts(store).revoke_key(key_id)
    err.print(f"revoked {record.key_id} (account {record.account_id})")


@keys_app.command("list")
def keys_list(
    store: StoreOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """List keys (ids, accounts, limits, state); never secrets."""
    records = [r.public() for r in _accounts(store).list_keys()]
    if json_output:
        for record in records:
            print(json.dumps(record))
        return
    table = Table("key id", "account", "org", "tier", "rpm", "tpm", "concurrency", "state")
    for record in records:
        limits = record["limits"]
        table.add_row(
            record["key_id"],
            record["account_id"],
            record["org_id"] or "",
            record["tier"],
            *(
                str(limits[k]) if limits[k] is not None else "default"
                for k in ("rpm", "tpm", "concurrency")
            ),
            "revoked" if record["revoked_at"] else "active",
        )
    Console().print(table)


@accounts_app.command("set-tier")
def accounts_set_tier(
    account: Annotated[str, typer.Argument(help="Account id.")],
    tier: Annotated[str, typer.Argument(help="normal, watch, throttle or block.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept with the account).")] = None,
    store: StoreOption = None,
) -> None:
    """Set an account's risk tier (gateways apply it within their refresh interval)."""
    _accounts(store).set_tier(account, tier, reason)
    err.print(f"account {account}: tier {tier}")


def _limits_setter(level: str, noun: str, members: str):
    """`accounts set-limits` and `orgs set-limits`: one command, two levels."""

    def set_limits(
        owner: Annotated[str, typer.Argument(metavar="ID", help="Account or organisation id.")],
        rpm: RpmOption = None,
        tpm: TpmOption = None,
        tpd: TpdOption = None,
        concurrency: ConcurrencyOption = None,
        store: StoreOption = None,
    ) -> None:
        from distillguard.policy import Limits

        limits = Limits(rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency)
        _accounts(store).set_limits(level, owner, limits)
        shown = ", ".join(f"{k} {v or 'default'}" for k, v in limits.columns().items())
        err.print(f"{noun} {owner}: {shown}")

    set_limits.__doc__ = f"Set an {noun}'s limits, shared by all its {members} (unset: default)."
    return set_limits


accounts_app.command("set-limits")(_limits_setter("account", "account", "keys"))
orgs_app.command("set-limits")(_limits_setter("org", "organisation", "accounts"))


@events_app.command("export")
def events_export(
    format: Annotated[str, typer.Option("--format", help="Output format: jsonl.")] = "jsonl",
    since: Annotated[float | None, typer.Option(help="Unix time: events at or after.")] = None,
    until: Annotated[float | None, typer.Option(help="Unix time: events before.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    store: StoreOption = None,
) -> None:
    """Write events as JSON lines on stdout, oldest first (schema: docs/events.md)."""
    from distillguard.store import EventStore, open_engine

    if format != "jsonl":
        raise DistillguardError(f"unknown format {format!r}: the only format is jsonl")
    events = EventStore(open_engine(_store_url(store)))
    out = sys.stdout
    for row in events.read(since=since, until=until, account_id=account):
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Directory for the three JSONL files.")],
    scenario: Annotated[
        str, typer.Option(help="default, hydra-swarm, hidden, heavy-benign or evasive.")
    ] = "default",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same traffic.")] = 0,
    scale: Annotated[float, typer.Option(help="Multiply every archetype's count.")] = 1.0,
    corpus: Annotated[
        Path | None, typer.Option(help="Prompt corpus (default: ../shared/data/prompts).")
    ] = None,
) -> None:
    """Simulate a week of traffic: events.jsonl, accounts.jsonl and labels.jsonl."""
    from distillguard.tracing.simulate import simulate as run_simulation
    from distillguard.tracing.simulate.corpus import find_corpus

    counts = run_simulation(scenario, out, find_corpus(corpus), seed=seed, scale=scale)
    screen.print(
        f"{counts['events']:,} events from {counts['accounts']:,} accounts "
        f"({counts['attackers']:,} attackers) written to {out}"
    )


EventsFile = Annotated[
    Path | None, typer.Option("--events", help="Events JSONL (default: the store's event log).")
]
AccountsFile = Annotated[
    Path | None, typer.Option("--accounts", help="Accounts JSONL (signup details) for linkage.")
]


def _trace_inputs(events: Path | None, accounts: Path | None, store: str | None):
    """Events and accounts, with every bad line reported on stderr by number."""
    from distillguard.store import EventStore, open_engine
    from distillguard.tracing.records import (
        InputReport,
        events_from_rows,
        read_accounts,
        read_events,
    )

    reports = []
    if events is None:
        report = InputReport("store events")
        rows = EventStore(open_engine(_store_url(store))).read()
        loaded = list(events_from_rows(rows, report))
    else:
        report = InputReport(str(events))
        loaded = list(read_events(events, report))
    reports.append(report)
    signups = {}
    if accounts is not None:
        accounts_report = InputReport(str(accounts))
        signups = read_accounts(accounts, accounts_report)
        reports.append(accounts_report)
        if not signups:
            raise DistillguardError(f"{accounts}: no usable account record")
    for report in reports:  # plain lines: people grep them, editors jump to file:line
        for problem in report.problems:
            print(f"skipped {problem}", file=sys.stderr)
        if report.bad:
            print(report.summary(), file=sys.stderr)
    if not loaded:
        raise DistillguardError(f"{reports[0].path}: no usable events")
    return loaded, signups


def _check_writable(path: Path | None) -> None:
    """Fail before the work, not after it: the directory must exist."""
    if path is not None and not path.parent.is_dir():
        raise DistillguardError(f"cannot write {path}: {path.parent} is not a directory")


def _write_json(path: Path, document: dict) -> None:
    """Whole or not at all: written beside the target, then renamed over it."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DistillguardError(f"cannot write {path}: {exc.strerror}") from None


@trace_app.command("run")
def trace_run(
    events: EventsFile = None,
    accounts: AccountsFile = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    apply_tiers: Annotated[
        bool, typer.Option(help="Raise flagged accounts' gateway tiers (tracing.* settings).")
    ] = False,
    store: StoreOption = None,
    top: Annotated[int, typer.Option(help="Flagged accounts to list on screen.")] = 10,
) -> None:
    """Score every account and cluster; save the run in the store (and as JSON with --json)."""
    from distillguard.store import AccountStore, ScoreStore, open_engine
    from distillguard.tracing.run import summary, trace
    from distillguard.tracing.tiers import earned_tiers

    _check_writable(json_out)
    loaded, signups = _trace_inputs(events, accounts, store)
    engine = open_engine(_store_url(store))
    shared = None
    if load_settings().exchange.keyring is not None:  # templates other members shared
        shared = _watchlist(store, None).shared_templates()
        if shared:
            screen.print(f"{len(shared):,} shared templates from the exchange watchlist")
    result = trace(loaded, signups, shared=shared)
    document = result.document()
    run_id = ScoreStore(engine).save_run(str(events or "store"), document, result.events)
    if json_out is not None:
        _write_json(json_out, document)
    counts = summary(result)
    screen.print(
        f"run {run_id}: {counts['events']:,} events, {counts['accounts']:,} accounts, "
        f"{counts['flagged_accounts']:,} flagged; {counts['clusters']:,} clusters, "
        f"{counts['flagged_clusters']:,} flagged"
    )
    flagged = sorted((a for a in result.accounts if a.flagged), key=lambda a: -a.score)
    if flagged and top > 0:
        table = Table("account", "score", "cluster", "flagged after", "evidence")
        for a in flagged[:top]:
            table.add_row(
                a.account_id,
                f"{a.score:.3f}",
                a.cluster_id or "-",
                str(a.flagged_after_requests),
                "; ".join(a.evidence[:3]),
            )
        screen.print(table)
    if apply_tiers:
        changed = AccountStore(engine).raise_tiers(earned_tiers(result, load_settings().tracing))
        moved = ", ".join(
            f"{tier}: {sum(t == tier for t in changed.values())}"
            for tier in sorted(set(changed.values()))
        )
        screen.print(f"tiers raised for {len(changed)} accounts ({moved or 'none'})")


@trace_app.command("evaluate")
def trace_evaluate(
    events: Annotated[Path, typer.Option("--events", help="Events JSONL.")],
    labels: Annotated[Path, typer.Option("--labels", help="labels.jsonl (from `simulate`).")],
    accounts: AccountsFile = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Directory for report.html, roc.png, .json.")
    ] = None,
) -> None:
    """Score the events, compare with labels and baselines, and report every metric."""
    from distillguard.tracing.evaluate import evaluate, read_labels, write_report
    from distillguard.tracing.run import trace

    _check_writable(report)
    truth = read_labels(labels)
    loaded, signups = _trace_inputs(events, accounts, None)
    metrics = evaluate(trace(loaded, signups), loaded, truth)
    table = Table("method", "ROC-AUC", "PR-AUC", "TPR @1% FPR", "TPR @0.1% FPR")
    for name, row in metrics["account_level"].items():
        table.add_row(name, *(f"{row[k]:.4f}" for k in row))
    screen.print(table)
    heavy, hydra = metrics["heavy_benign"], metrics["hydra_linkage"]
    bulk = metrics["time_to_flag"]["bulk_attackers"]
    screen.print(
        f"heavy benign users flagged: {heavy['flagged']} of {heavy['accounts']}; "
        f"bulk attackers flagged after a median of {bulk['median_requests']} requests "
        f"(p90 {bulk['p90_requests']}); hydra accounts linked: {hydra['linked']} of "
        f"{hydra['hydra_accounts']}"
    )
    if report is not None:
        for path in write_report(metrics, report):
            screen.print(f"wrote {path}")


# -- the exchange hub ------------------------------------------------------------------

hub_app = typer.Typer(
    help="The exchange hub: a TAXII 2.1 server for sharing signals.", no_args_is_help=True
)
app.add_typer(hub_app, name="hub")
hub_collection_app = typer.Typer(help="Hub collections.", no_args_is_help=True)
hub_app.add_typer(hub_collection_app, name="collection")
hub_member_app = typer.Typer(help="Hub members and their rights.", no_args_is_help=True)
hub_app.add_typer(hub_member_app, name="member")

HubStoreOption = Annotated[
    str | None,
    typer.Option("--store", help="The hub's database URL (default: SQLite in the data dir)."),
]


def _hub_store(url: str | None):
    import platformdirs

    from distillguard.exchange.hub.schema import metadata
    from distillguard.exchange.hub.store import HubStore
    from distillguard.store import open_engine

    default = f"sqlite:///{platformdirs.user_data_path('distillguard') / 'hub.db'}"
    return HubStore(open_engine(url or default, schema=metadata))


@hub_app.command("serve")
def hub_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9400,
    store: HubStoreOption = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="DISTILLGUARD_HUB_URL",
            help="The hub's public URL (e.g. https://hub.example:9400), advertised by discovery.",
        ),
    ] = None,
) -> None:
    """Serve TAXII 2.1 (discovery at /taxii2/, the API root at /api/)."""
    import uvicorn

    from distillguard.exchange.hub.app import create_app

    hub = _hub_store(store)
    app = create_app(hub, base_url=base_url)  # a malformed URL fails here, in one line
    if remarked := hub.remark_tlp():  # objects stored under older, looser marking rules
        err.print(f"re-read the TLP marking of {remarked:,} stored objects")
    err.print(f"hub listening on http://{host}:{port}/taxii2/")
    # No proxy headers: the hub has no use for a client's claimed address.
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


@hub_collection_app.command("add")
def hub_collection_add(
    name: Annotated[str, typer.Argument(help="Collection name (its title in TAXII).")],
    description: Annotated[str | None, typer.Option(help="What it holds.")] = None,
    store: HubStoreOption = None,
) -> None:
    """Create a collection; prints its TAXII id."""
    typer.echo(_hub_store(store).add_collection(name, description))


@hub_member_app.command("add")
def hub_member_add(
    name: Annotated[str, typer.Argument(help="Member name (a provider).")],
    read: Annotated[
        list[str] | None, typer.Option("--read", help="A collection it may read.")
    ] = None,
    write: Annotated[
        list[str] | None, typer.Option("--write", help="A collection it may publish to.")
    ] = None,
    org: Annotated[
        str | None, typer.Option(help="Its organisation (TLP:AMBER+STRICT scope; default NAME).")
    ] = None,
    anonymous: Annotated[
        bool, typer.Option(help="Show its objects as created by the hub (audit keeps it).")
    ] = False,
    expires_days: Annotated[float | None, typer.Option(help="Token lifetime in days.")] = None,
    store: HubStoreOption = None,
) -> None:
    """Register a member; prints its bearer token once (only a hash is kept)."""
    token = _hub_store(store).add_member(
        name,
        org=org,
        read=read or [],
        write=write or [],
        anonymous=anonymous,
        expires_days=expires_days,
    )
    typer.echo(token)


@hub_member_app.command("revoke")
def hub_member_revoke(
    name: Annotated[str, typer.Argument(help="Member name.")],
    store: HubStoreOption = None,
) -> None:
    """Revoke a member's token at once (what it published stays, the audit log says when)."""
    _hub_store(store).revoke_member(name)
    err.print(f"member {name}: token revoked")


# -- the exchange client ---------------------------------------------------------------

exchange_app = typer.Typer(
    help="Share signals with other providers through a hub, and act on theirs.",
    no_args_is_help=True,
)
app.add_typer(exchange_app, name="exchange")

KeyringOption = Annotated[
    Path | None,
    typer.Option("--keyring", help="The consortium key file (default: exchange.keyring)."),
]


def _exchange_settings(keyring: Path | None = None, **overrides: object):
    """The exchange settings, with the command line's choices over the configured ones."""
    settings = load_settings().exchange
    chosen = {k: v for k, v in {"keyring": keyring, **overrides}.items() if v is not None}
    return settings.model_copy(update=chosen)


def _keyring(path: Path | None, required: bool = True):
    from distillguard.exchange.privacy import ExchangeError, KeyRing

    if path is None:
        if required:
            raise ExchangeError("no consortium key ring: set exchange.keyring or pass --keyring")
        return None
    return KeyRing.load(path)


def _watchlist(store: str | None, keyring: Path | None, required: bool = True):
    from distillguard.exchange.watchlist import Watchlist
    from distillguard.store import open_engine

    settings = _exchange_settings(keyring)
    return Watchlist(open_engine(_store_url(store)), _keyring(settings.keyring, required), settings)


@exchange_app.command("keygen")
def exchange_keygen(
    path: Annotated[Path, typer.Argument(help="Where to write the new key file.")],
    key_id: Annotated[str, typer.Option(help="The key's id, published with every hash.")] = "k1",
    rotate: Annotated[
        bool, typer.Option(help="Add a new current key to the ring at PATH (old keys still match).")
    ] = False,
) -> None:
    """Create a consortium key ring (one member does, and shares it with the others out of
    band), or rotate it."""
    from distillguard.exchange.privacy import KeyRing

    if rotate:
        ring = KeyRing.load(path).rotated(key_id)
    elif path.exists():
        raise DistillguardError(f"{path} exists: pass --rotate to add a key to it")
    else:
        _check_writable(path)
        ring = KeyRing.generate(key_id)
    ring.save(path)
    err.print(f"{path}: current key {ring.current.key_id}, {len(ring.keys)} held (mode 0600)")


@accounts_app.command("identify")
def accounts_identify(
    account: Annotated[str, typer.Argument(help="Account id.")],
    email: Annotated[list[str] | None, typer.Option("--email", help="An email address.")] = None,
    phone: Annotated[list[str] | None, typer.Option("--phone", help="A phone number.")] = None,
    payment: Annotated[
        list[str] | None, typer.Option("--payment", help="A payment fingerprint or card.")
    ] = None,
    keyring: KeyringOption = None,
    store: StoreOption = None,
) -> None:
    """Record an account's identifiers (kept only as consortium-keyed hashes) and match them
    against the watchlist at once: a match raises the account's tier."""
    identifiers = [
        *(("email", v) for v in email or []),
        *(("phone", v) for v in phone or []),
        *(("payment", v) for v in payment or []),
    ]
    watchlist = _watchlist(store, keyring)
    found = watchlist.identify(account, identifiers)
    err.print(f"account {account}: {len(identifiers)} identifiers recorded (hashed)")
    for match in found:
        screen.print(match.reason())
    tier, _ = watchlist.accounts.account_tier(account)
    err.print(f"account {account}: tier {tier}")


def _events_of(accounts: set[str], path: Path | None, engine) -> list:
    """These accounts' events, from a JSONL file or streamed from the store (never the
    whole log in memory)."""
    from distillguard.store import EventStore
    from distillguard.tracing.records import InputReport, events_from_rows, read_events

    if path is not None:
        return [e for e in read_events(path) if e.account_id in accounts]
    rows = (r for r in EventStore(engine).read() if r["account_id"] in accounts)
    return list(events_from_rows(rows, InputReport("store events")))


@exchange_app.command("publish")
def exchange_publish(
    run: Annotated[int | None, typer.Option(help="The trace run (default: the latest).")] = None,
    events: EventsFile = None,
    accounts: Annotated[
        Path | None,
        typer.Option("--accounts", help="Accounts JSONL: identifiers beyond those on record."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the bundle here instead of posting it.")
    ] = None,
    keyring: KeyringOption = None,
    hub: Annotated[str | None, typer.Option(help="The hub's API root URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="The collection's id or title.")] = None,
    store: StoreOption = None,
) -> None:
    """Publish a trace run's flagged accounts, their templates and clusters to the hub
    (only what was not published before)."""
    from distillguard.exchange import publish, stix
    from distillguard.exchange.client import HubClient
    from distillguard.store import ScoreStore, open_engine

    settings = _exchange_settings(keyring, hub=hub, collection=collection)
    ring = _keyring(settings.keyring)
    _check_writable(out)
    client = HubClient.from_settings(settings) if out is None else None  # fail before work
    engine = open_engine(_store_url(store))
    scores = ScoreStore(engine)
    run_id = run if run is not None else scores.latest_run()
    if run_id is None:
        raise DistillguardError("no trace run in the store: run `distillguard trace run` first")
    account_rows, cluster_rows = scores.flagged(run_id)
    flagged = [publish.Flagged(r["account_id"], r["score"], r["evidence"]) for r in account_rows]
    clusters = [
        publish.Flagged(r["cluster_id"], r["score"], r["evidence"], r["accounts"])
        for r in cluster_rows
    ]
    wanted = {f.subject_id for f in flagged}
    hashes = publish.identifier_hashes(engine, wanted)
    if accounts is not None:
        from distillguard.tracing.records import read_accounts

        for record in read_accounts(accounts).values():
            if record.account_id in wanted:
                given = [("email", record.email), ("payment", record.payment_fingerprint)]
                hashes.setdefault(record.account_id, []).extend(
                    ring.hash(kind, value) for kind, value in given if value
                )
    examples = publish.template_texts(_events_of(wanted, events, engine))
    publication = publish.build(
        flagged,
        clusters,
        {a: sorted(set(h)) for a, h in hashes.items()},
        examples,
        ring,
        settings,
        publish.already_published(engine, settings),
    )
    for reason in publication.skipped:
        err.print(f"not shared: {reason}")
    counts = ", ".join(f"{n} {what}" for what, n in publication.counts.items())
    if out is not None:
        _write_json(out, stix.bundle(publication.objects, allow_ip=settings.allow_ip))
        err.print(f"run {run_id}: {counts}; bundle written to {out} (nothing posted)")
        return
    if not publication.objects:
        err.print(f"run {run_id}: nothing new to publish")
        return
    assert client is not None
    posted = client.publish(publication.objects)
    recorded = publish.record(engine, publication, posted.accepted)
    for failure in posted.failures:
        err.print(f"refused by the hub: {failure}")
    if posted.error is not None or posted.failures:
        raise DistillguardError(
            f"published {recorded} of {len(publication.subjects)} findings "
            f"({len(posted.accepted)} objects taken); {posted.error or 'the hub refused some'}"
            " — run publish again to send the rest"
        )
    err.print(f"run {run_id}: published {counts} ({len(posted.accepted)} objects) to {client.url}")


@exchange_app.command("pull")
def exchange_pull(
    keyring: KeyringOption = None,
    hub: Annotated[str | None, typer.Option(help="The hub's API root URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="The collection's id or title.")] = None,
    store: StoreOption = None,
) -> None:
    """Import other members' new indicators into the watchlist, then raise the tiers of our
    accounts that match them."""
    from distillguard.exchange.client import HubClient

    settings = _exchange_settings(keyring, hub=hub, collection=collection)
    client = HubClient.from_settings(settings)
    watchlist = _watchlist(store, settings.keyring, required=False)
    pulled = watchlist.pull(client)
    got = pulled.ingested
    for problem in got.problems:
        err.print(f"skipped {problem}")
    err.print(
        f"{pulled.objects} objects: {got.indicators} indicators stored, {got.revoked} revoked, "
        f"{got.corroborations} corroborations, {got.ignored} other"
    )
    accounts = {m.account_id for m in pulled.matches}
    err.print(
        f"{len(accounts)} of our accounts match shared indicators; "
        f"tiers raised for {len(pulled.raised)}"
    )
    for account, tier in sorted(pulled.raised.items()):
        print(f"{account}\t{tier}")  # tab-separated: for scripts


psi_app = typer.Typer(
    help="One-off private set intersection with another member: the overlap's size only.",
    no_args_is_help=True,
)
exchange_app.add_typer(psi_app, name="psi")
FlaggedOption = Annotated[
    bool, typer.Option("--flagged", help="Only the accounts the latest trace run flagged.")
]


def _psi_hashes(store: str | None, keyring: Path | None, flagged: bool) -> list[str]:
    """Our identifier hashes under the current consortium key."""
    from distillguard.store import ScoreStore

    watchlist = _watchlist(store, keyring)
    accounts = None
    if flagged:
        scores = ScoreStore(watchlist.engine)
        run_id = scores.latest_run()
        if run_id is None:
            raise DistillguardError("no trace run in the store: run `distillguard trace run`")
        accounts = [row["account_id"] for row in scores.flagged(run_id)[0]]
    return watchlist.hashes(watchlist.keyring.current.key_id, accounts)


@psi_app.command("request")
def psi_request(
    out: Annotated[Path, typer.Option("--out", help="The request file to send.")],
    flagged: FlaggedOption = False,
    keyring: KeyringOption = None,
    store: StoreOption = None,
) -> None:
    """Step 1 (member B): a request over our hashes; the secret key stays in OUT.key."""
    from distillguard.exchange import psi

    _check_writable(out)
    secret, document = psi.request(_psi_hashes(store, keyring, flagged))
    key_path = out.with_name(out.name + ".key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    _write_json(out, document)
    err.print(f"{out}: request over {document['items']} hashes; keep {key_path} (secret)")


@psi_app.command("respond")
def psi_respond(
    request_file: Annotated[Path, typer.Argument(help="The request another member sent.")],
    out: Annotated[Path, typer.Option("--out", help="The response file to send back.")],
    flagged: FlaggedOption = False,
    keyring: KeyringOption = None,
    store: StoreOption = None,
) -> None:
    """Step 2 (member A): answer a request over our hashes."""
    from distillguard.exchange import psi

    _check_writable(out)
    document = psi.respond(psi.read(request_file), _psi_hashes(store, keyring, flagged))
    _write_json(out, document)
    err.print(f"{out}: response written")


@psi_app.command("overlap")
def psi_overlap(
    response_file: Annotated[Path, typer.Argument(help="The response to our request.")],
    key: Annotated[Path, typer.Option("--key", help="The request's secret key (OUT.key).")],
) -> None:
    """Step 3 (member B): print how many identifier hashes both members hold."""
    from distillguard.exchange import psi

    try:
        secret = key.read_bytes()
    except OSError as exc:
        raise DistillguardError(f"cannot read {key}: {exc.strerror}") from None
    print(psi.overlap(psi.read(response_file), secret))


# -- suspect tests -----------------------------------------------------------------------

suspect_app = typer.Typer(
    help="Test a suspect model for our watermark: trained on our outputs, and whose?",
    no_args_is_help=True,
)
app.add_typer(suspect_app, name="suspect")


@suspect_app.command("test")
def suspect_test(
    key: Annotated[Path, typer.Option("--key", help="The watermark key file.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Open weights: a transformers directory or a .gguf."),
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="API mode: the suspect's OpenAI-compatible base URL.")
    ] = None,
    api_model: Annotated[str | None, typer.Option(help="API mode: the model name.")] = None,
    corpus: Annotated[
        Path | None,
        typer.Option("--corpus", help="Our answers (events export or prompt/response JSONL)."),
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="API mode: prompts JSONL to ask.")
    ] = None,
    cohorts: Annotated[
        int | None, typer.Option(help="Test the N cohort sub-keys (the gateway's cohorts).")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.01,
    budget: Annotated[int, typer.Option(help="Open weights: answer tokens read at most.")] = 50_000,
    batch_size: Annotated[int, typer.Option(help="Open weights: answers per pass.")] = 8,
    max_tokens: Annotated[int, typer.Option(help="API mode: tokens per answer.")] = 256,
    frequent: Annotated[
        int | None,
        typer.Option(help="API mode: score only contexts seen N+ times in --corpus."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the verdict here.")] = None,
) -> None:
    """Test a suspect for our watermark, under the key (or each cohort's sub-key,
    Holm-corrected), beside a control of unused keys that must stay non-significant.
    Open weights (--model, --corpus): it reads our answers. API (--api-url, --api-model,
    --prompts): it answers our prompts. The API key is read from $DISTILLGUARD_SUSPECT_API_KEY."""
    from distillguard.suspect.corpus import read_corpus
    from distillguard.suspect.run import accounts_of, api_test, load_suspect, reading_test

    api = api_url is not None or api_model is not None
    if (model is not None) == api:
        raise DistillguardError("give either --model PATH or --api-url URL --api-model NAME")
    if api and (api_url is None or api_model is None or prompts is None):
        raise DistillguardError("API mode needs --api-url, --api-model and --prompts")
    if not api and corpus is None:
        raise DistillguardError("open-weight mode needs --corpus (our answers)")
    if frequent is not None and (not api or corpus is None or frequent < 1):
        raise DistillguardError("--frequent N (N >= 1) is for API mode, with --corpus")
    if not 0.0 < alpha < 1.0:
        raise DistillguardError("--alpha must be between 0 and 1")
    if min(budget, batch_size, max_tokens, cohorts or 1) < 1:
        raise DistillguardError(
            "--budget, --batch-size, --max-tokens and --cohorts must be positive"
        )
    _check_writable(json_out)
    watermark_key = WatermarkKey.load(key)
    answers = read_corpus(corpus) if corpus is not None else None
    if api:
        from distillguard.engine.prompts import read_prompts

        asked = read_prompts(prompts)
    ours = _engine(load_settings())
    with _progress() as progress:
        if api:
            import openai

            client = openai.OpenAI(
                base_url=api_url,
                api_key=os.environ.get("DISTILLGUARD_SUSPECT_API_KEY", "none"),
                max_retries=2,
            )
            task = progress.add_task("asking", total=len(asked))
            verdict = api_test(
                watermark_key,
                client,
                api_model,
                asked,
                ours,
                cohorts=cohorts,
                alpha=alpha,
                max_tokens=max_tokens,
                frequent=(answers, frequent) if frequent is not None else None,
                on_answer=lambda n: progress.advance(task, n),
            )
            document = {**verdict.document(), "answers": len(asked)}
        else:
            suspect = load_suspect(model)
            task = progress.add_task("reading", total=len(answers.answers))
            verdict, items = reading_test(
                watermark_key,
                suspect,
                answers,
                ours,
                cohorts=cohorts,
                alpha=alpha,
                budget=budget,
                batch_size=batch_size,
                on_batch=lambda n: progress.advance(task, n),
            )
            document = {**verdict.document(), "answers_read": len(items)}
    named = accounts_of(verdict, answers) if answers is not None else {}
    if named:
        document["accounts"] = {str(c): a for c, a in named.items()}
    if json_out is not None:
        _write_json(json_out, document)
    print(json.dumps(document))
    err.print(
        f"{document['verdict']}: p = {document['p_value']:.3g} over {document['scored']:,} "
        f"windows; control p = {document['control']['p_value']:.3g}"
    )
