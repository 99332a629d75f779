"""The gateway's speed under two versions of the code, side by side in one run.

For a change that should cost nothing (a refactor): one fake upstream, one gateway per
checkout (`--a`, `--b`: repository roots; the gateway runs `src/` of each), measured in
alternating order, round after round, so that the shared machine's drift hits both
alike. Throughput: wrk, 64 connections, closed loop; latency: Poisson arrivals (as in
gateway_bench.py). Reported per round and as the median ratio b / a.

    .venv/bin/python benchmarks/gateway_ab.py --a ../old-checkout --b . --rounds 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from gateway_bench import WRK_SCRIPT, distillguard, run_openloop, run_wrk, upstream

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--b", type=Path, default=ROOT)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=300, help="Poisson req/s for latency")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/gateway_ab.json")
    args = parser.parse_args()
    sources = {"a": args.a.resolve(), "b": args.b.resolve()}
    for source in sources.values():
        if not (source / "src" / "distillguard").is_dir():
            raise SystemExit(f"{source}: not a distillguard checkout (no src/distillguard)")

    rows: list[dict] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dg-ab-")))
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT)
        base = stack.enter_context(upstream())
        targets = {
            name: stack.enter_context(distillguard(base, workdir, None, source=source))
            for name, source in sources.items()
        }
        for round_ in range(args.rounds):
            order = ["a", "b"] if round_ % 2 == 0 else ["b", "a"]
            row: dict = {"round": round_, "order": "".join(order)}
            for name in order:
                run_wrk(targets[name], 2, args.connections, script)  # warm-up
                row[f"{name}_rps"] = run_wrk(targets[name], args.seconds, args.connections, script)[
                    "rps"
                ]
            for name in order:
                row[f"{name}_p50_ms"] = run_openloop(targets[name], args.seconds, args.rate)[
                    "p50_ms"
                ]
            rows.append(row)
            print(json.dumps(row), flush=True)

    def ratio(field: str) -> float:
        return statistics.median(r[f"b_{field}"] / r[f"a_{field}"] for r in rows)

    summary = {
        "sources": {k: str(v) for k, v in sources.items()},
        "rounds": rows,
        "median_rps": {k: statistics.median(r[f"{k}_rps"] for r in rows) for k in sources},
        "median_p50_ms": {k: statistics.median(r[f"{k}_p50_ms"] for r in rows) for k in sources},
        "ratio_b_over_a": {"rps": ratio("rps"), "p50_ms": ratio("p50_ms")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("median_rps", "median_p50_ms", "ratio_b_over_a")}))


if __name__ == "__main__":
    main()
