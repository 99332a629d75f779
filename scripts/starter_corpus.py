"""Build the starter prompt corpus that ships with distillguard (the simulator's fallback
when no full corpus is at hand): a deterministic sample of the permissively licensed files
of ../shared/data/prompts, with their attribution.

    python scripts/starter_corpus.py [--source ../shared/data/prompts]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "distillguard" / "tracing" / "simulate" / "prompts"
# Permissive licences only (no non-commercial or research-only data), and no red-teaming
# transcripts: what anyone may redistribute and read.
SOURCES = {
    "self_instruct": ("yizhongw/self-instruct", "Apache-2.0"),
    "awesome_chatgpt_prompts": ("f/awesome-chatgpt-prompts", "CC0-1.0"),
    "awesome_chatgpt_prompts_zh": ("PlexPt/awesome-chatgpt-prompts-zh", "MIT"),
    "humaneval": ("openai/human-eval", "MIT"),
    "gsm8k": ("openai/grade-school-math", "MIT"),
    "mgsm": ("google-research/url-nlp", "CC BY 4.0"),
    "mt_bench": ("lm-sys/FastChat", "Apache-2.0"),
    "cot_elicitation": ("written for distillguard", "the repository's licence"),
}
BYTES_PER_FILE = 48_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "prompts")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (origin, licence) in SOURCES.items():
        lines = [
            line
            for line in (args.source / f"{name}.jsonl").read_text(encoding="utf-8").split("\n")
            if line.strip()
        ]
        for line in lines:
            json.loads(line)  # a corpus record, or stop here
        # Evenly spaced records, as many as fit the budget: the whole file's variety.
        average = sum(len(line.encode()) + 1 for line in lines) / len(lines)
        count = min(len(lines), int(BYTES_PER_FILE / average))
        kept = [lines[i * len(lines) // count] for i in range(count)]
        (OUT / f"{name}.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
        rows.append(f"| `{name}.jsonl` | {origin} | {licence} | {len(kept)} of {len(lines)} |")
    (OUT / "README.md").write_text(
        "# Starter prompt corpus\n\n"
        "A sample of public prompt sets under permissive licences, for `distillguard simulate`\n"
        "when no full corpus is given (`--corpus DIR` or `DISTILLGUARD_PROMPTS`). Built by\n"
        "`scripts/starter_corpus.py`; records keep their source's `id`.\n\n"
        "| file | origin | licence | records |\n|---|---|---|---|\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
