"""`distillguard trace evaluate`: how well tracing separates distillers from everyone else.

Scores from one `trace` run are compared with the simulator's labels (or any
labels in the same shape), beside two baselines computed on the same events:

* **volume** — the account's request count (what a plain rate limit sees);
* **PRADA** (Juuti et al., 2019), built for model-extraction attacks on
  classifiers: for each account, the distance from every new prompt to the
  nearest earlier one; natural traffic gives a roughly normal distribution of
  these distances, synthetic sweeps do not. Score = 1 − Shapiro–Wilk W.
  Prompts are embedded as hashed character n-gram TF vectors.

Needs the `eval` extra (scikit-learn, matplotlib).
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillguard.errors import DistillguardError
from distillguard.tracing.records import TraceEvent
from distillguard.tracing.run import TraceResult

HEAVY_REQUESTS = 300  # a benign account this busy is a "heavy benign user"
BULK_ARCHETYPES = frozenset(
    {"bulk_harvester", "cot_harvester", "multilingual_harvester", "capability_sweep"}
)
PRADA_PROMPTS = 200  # per account: PRADA's test needs tens of queries, not thousands
PRADA_MIN = 20


class EvaluationError(DistillguardError):
    """Labels missing or unusable, or the `eval` extra is not installed."""


@dataclass
class Labels:
    label: dict[str, bool]  # account -> is an attacker
    archetype: dict[str, str]
    actor: dict[str, str]


def read_labels(path: Path) -> Labels:
    labels = Labels({}, {}, {})
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            account, label = row["account_id"], row["label"]
        except (ValueError, KeyError, TypeError):
            raise EvaluationError(f"{path}:{number}: needs `account_id` and `label`") from None
        if label not in ("attacker", "benign"):
            raise EvaluationError(f"{path}:{number}: `label` is 'attacker' or 'benign'")
        labels.label[account] = label == "attacker"
        labels.archetype[account] = str(row.get("archetype", label))
        labels.actor[account] = str(row.get("actor", account))
    if not labels.label:
        raise EvaluationError(f"{path}: no labels")
    return labels


def evaluate(result: TraceResult, events: Sequence[TraceEvent], labels: Labels) -> dict[str, Any]:
    """Every metric of the issue's evaluation, as one JSON-able document."""
    metrics = _sklearn_metrics()
    rows = [a for a in result.accounts if a.account_id in labels.label and a.requests > 0]
    if not rows:
        raise EvaluationError("no labelled account sent a request")
    y = np.array([labels.label[a.account_id] for a in rows])
    if y.all() or not y.any():
        raise EvaluationError("labels need both attackers and benign accounts")
    ours = np.array([a.score for a in rows])
    volume = np.array([float(a.requests) for a in rows])
    prada = _prada_scores(events, [a.account_id for a in rows])

    report: dict[str, Any] = {
        "accounts": len(rows),
        "attackers": int(y.sum()),
        "account_level": {
            "distillguard": _ranking(metrics, y, ours),
            "baseline_volume": _ranking(metrics, y, volume),
            "baseline_prada": _ranking(metrics, y, prada),
        },
    }
    heavy = [a for a in rows if not labels.label[a.account_id] and a.requests >= HEAVY_REQUESTS]
    report["heavy_benign"] = {
        "accounts": len(heavy),
        "flagged": sum(a.flagged for a in heavy),
        "fpr": sum(a.flagged for a in heavy) / len(heavy) if heavy else None,
        "threshold_requests": HEAVY_REQUESTS,
    }
    report["flag_threshold"] = {
        "tpr": float(np.mean([a.flagged for a in rows if labels.label[a.account_id]])),
        "fpr": float(np.mean([a.flagged for a in rows if not labels.label[a.account_id]])),
    }
    report["time_to_flag"] = {
        "bulk_attackers": _quantiles(
            [a for a in rows if labels.archetype[a.account_id] in BULK_ARCHETYPES]
        ),
        "all_attackers": _quantiles([a for a in rows if labels.label[a.account_id]]),
    }
    report["hydra_linkage"] = _linkage(result, labels)
    report["clusters"] = _cluster_level(metrics, result, labels)
    report["archetypes"] = _by_archetype(rows, labels)
    report["_curves"] = {
        name: _curve(metrics, y, scores)
        for name, scores in (("distillguard", ours), ("volume", volume), ("PRADA", prada))
    }
    return report


def _sklearn_metrics():
    try:
        from sklearn import metrics
    except ImportError:
        raise EvaluationError(
            "evaluation needs the eval extra: pip install 'distillguard[eval]'"
        ) from None
    return metrics


def _ranking(metrics, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = metrics.roc_curve(y, scores)
    return {
        "roc_auc": float(metrics.roc_auc_score(y, scores)),
        "pr_auc": float(metrics.average_precision_score(y, scores)),
        "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
        "tpr_at_0.1pct_fpr": float(tpr[fpr <= 0.001].max()),
    }


def _curve(metrics, y: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    fpr, tpr, _ = metrics.roc_curve(y, scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def _quantiles(rows) -> dict[str, Any]:
    after = sorted(a.flagged_after_requests for a in rows if a.flagged_after_requests)
    return {
        "attackers": len(rows),
        "flagged": len(after),
        "median_requests": statistics.median(after) if after else None,
        "p90_requests": after[int(0.9 * (len(after) - 1))] if after else None,
    }


def _linkage(result: TraceResult, labels: Labels) -> dict[str, Any]:
    """Share of hydra accounts placed in a cluster whose majority is their own operator."""
    members: dict[str, list[str]] = defaultdict(list)
    for cluster in result.clusters:
        for account in cluster.accounts:
            members[cluster.cluster_id].append(labels.actor.get(account, account))
    majority = {cid: Counter(actors).most_common(1)[0][0] for cid, actors in members.items()}
    hydra = [a for a in result.accounts if labels.archetype.get(a.account_id) == "hydra"]
    linked = sum(
        1
        for a in hydra
        if a.cluster_id is not None and majority.get(a.cluster_id) == labels.actor[a.account_id]
    )
    return {
        "hydra_accounts": len(hydra),
        "linked": linked,
        "share": linked / len(hydra) if hydra else None,
    }


def _cluster_level(metrics, result: TraceResult, labels: Labels) -> dict[str, Any]:
    y, scores = [], []
    for cluster in result.clusters:
        known = [labels.label[a] for a in cluster.accounts if a in labels.label]
        if known:
            y.append(sum(known) * 2 > len(known))
            scores.append(cluster.score)
    out: dict[str, Any] = {
        "clusters": len(y),
        "attacker_clusters": int(sum(y)),
        "flagged": sum(c.flagged for c in result.clusters),
    }
    if 0 < sum(y) < len(y):
        out |= _ranking(metrics, np.array(y), np.array(scores))
    return out


def _by_archetype(rows, labels: Labels) -> dict[str, dict[str, Any]]:
    groups: dict[str, list] = defaultdict(list)
    for a in rows:
        groups[labels.archetype[a.account_id]].append(a)
    return {
        name: {
            "attacker": labels.label[group[0].account_id],
            "accounts": len(group),
            "flagged": sum(a.flagged for a in group),
            "median_score": statistics.median(a.score for a in group),
            "median_requests": statistics.median(a.requests for a in group),
        }
        for name, group in sorted(groups.items())
    }


def _prada_scores(events: Sequence[TraceEvent], accounts: Sequence[str]) -> np.ndarray:
    from scipy.stats import shapiro
    from sklearn.feature_extraction.text import HashingVectorizer

    prompts: dict[str, list[str]] = defaultdict(list)
    for event in events:
        texts = prompts[event.account_id]
        if len(texts) < PRADA_PROMPTS:
            texts.append(event.text[:1000])
    vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 4), n_features=2**14)
    scores = []
    for account in accounts:
        texts = prompts.get(account, [])
        if len(texts) < PRADA_MIN:
            scores.append(0.0)
            continue
        x = vectorizer.transform(texts)
        gram = (x @ x.T).toarray()
        dist = np.sqrt(np.maximum(2.0 - 2.0 * gram, 0.0))  # rows are unit vectors
        nearest = [dist[i, :i].min() for i in range(1, len(texts))]
        if np.ptp(nearest) == 0:
            scores.append(1.0)  # every prompt equally far: nothing natural about it
            continue
        scores.append(1.0 - float(shapiro(nearest).statistic))
    return np.array(scores)


def write_report(report: Mapping[str, Any], out: Path) -> list[Path]:
    """`report.json`, `roc.png` and `report.html` (the PNG embedded) in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, curve in report["_curves"].items():
        for ax in axes:
            ax.plot(curve["fpr"], curve["tpr"], label=name)
    axes[0].set(title="ROC, accounts", xlabel="false positive rate", ylabel="true positive rate")
    axes[1].set(title="ROC, low-FPR region", xlabel="false positive rate (log)", xscale="log")
    axes[1].set_xlim(1e-4, 1)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    plt.close(figure)
    paths = [out / "roc.png", out / "report.json", out / "report.html"]
    paths[0].write_bytes(png.getvalue())
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    paths[1].write_text(json.dumps(public, indent=2) + "\n")
    paths[2].write_text(_html(public, base64.b64encode(png.getvalue()).decode()))
    return paths


# The report's words for the document's keys (the JSON keeps the keys).
WORDS = {
    "distillguard": "distillguard",
    "baseline_volume": "baseline: request volume",
    "baseline_prada": "baseline: PRADA",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "tpr_at_1pct_fpr": "TPR at 1 % FPR",
    "tpr_at_0.1pct_fpr": "TPR at 0.1 % FPR",
    "attacker": "attacker",
    "accounts": "accounts",
    "flagged": "flagged",
    "median_score": "median score",
    "median_requests": "median requests",
    "p90_requests": "p90 requests",
    "attackers": "attackers",
    "fpr": "false positive rate",
    "tpr": "true positive rate",
    "threshold_requests": "heavy from (requests)",
    "hydra_accounts": "hydra accounts",
    "linked": "linked to their operation",
    "share": "share",
    "clusters": "clusters",
    "attacker_clusters": "attacker clusters",
}


def _html(report: Mapping[str, Any], png: str) -> str:
    def table(rows: Mapping[str, Mapping[str, Any]]) -> str:
        columns = list(next(iter(rows.values())).keys())
        head = "".join(f"<th>{_word(c)}</th>" for c in ["", *columns])
        body = "".join(
            "<tr><td>"
            + _word(name)
            + "</td>"
            + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in columns)
            + "</tr>"
            for name, r in rows.items()
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    sections = [
        "<h2>Account level</h2>" + table(report["account_level"]),
        "<h2>Heavy benign users, time to flag, linkage</h2><table>"
        + "".join(
            f"<tr><td>{name}</td><td>{html.escape(_fmt(values))}</td></tr>"
            for name, values in (
                ("heavy benign users", report["heavy_benign"]),
                ("at the flag threshold", report["flag_threshold"]),
                ("time to flag, bulk attackers", report["time_to_flag"]["bulk_attackers"]),
                ("time to flag, all attackers", report["time_to_flag"]["all_attackers"]),
                ("hydra linkage", report["hydra_linkage"]),
            )
        )
        + "</table>",
        "<h2>Clusters</h2>" + table({"clusters": report["clusters"]}),
        "<h2>By archetype</h2>" + table(report["archetypes"]),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>distillguard tracing "
        f"evaluation</title><style>{style}</style></head><body><h1>Tracing evaluation</h1>"
        f"<p>{report['accounts']} accounts, {report['attackers']} attackers.</p>"
        "<p><strong>These figures come from labelled traffic</strong>, simulated when it was "
        "made by <code>distillguard simulate</code>: the simulator and the detector were "
        "written by the same hands, so they show what the signals were built to catch, not "
        "what real campaigns evade. Real labelled traffic is the real test.</p>"
        f"<img alt='ROC curves' src='data:image/png;base64,{png}'>"
        + "".join(sections)
        + "</body></html>\n"
    )


def _word(key: str) -> str:
    return html.escape(WORDS.get(key, key.replace("_", " ")))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{WORDS.get(k, k)}: {_fmt(v)}" for k, v in value.items())
    return "–" if value is None else str(value)
