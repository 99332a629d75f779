"""The real prompts the simulator draws from, grouped by what kind of user would send them.

Files are the shared corpus's JSONL (`id`, `source`, `category`, `language`,
`turns`); see ../shared/data/prompts/README.md for origins and licences. Without it,
the starter corpus that ships with the package (`prompts/`: a sample of the permissively
licensed files, its README says which) is used: a source file it lacks is skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from distillguard.errors import DistillguardError

CORPUS_ENV = "DISTILLGUARD_PROMPTS"
STARTER = Path(__file__).resolve().parent / "prompts"
# Pools: which source files feed which kind of traffic.
POOLS = {
    "chat": (
        "instructionwild",
        "self_instruct",
        "awesome_chatgpt_prompts",
        "hh_rlhf_harmless_base",
    ),
    "chat_zh": ("belle_zh", "awesome_chatgpt_prompts_zh"),
    "code": ("codealpaca", "humaneval"),
    "math": ("gsm8k",),
    "math_multilingual": ("mgsm",),
    "eval": ("gsm8k", "humaneval", "mt_bench", "mgsm"),
    "cot_phrases": ("cot_elicitation",),
}


@dataclass(frozen=True)
class Prompt:
    turns: tuple[str, ...]
    language: str
    category: str


@dataclass
class Corpus:
    pools: dict[str, list[Prompt]] = field(default_factory=dict)

    def pool(self, name: str) -> list[Prompt]:
        return self.pools[name]


def find_corpus(given: Path | None) -> Path:
    """The corpus directory: `given` or $DISTILLGUARD_PROMPTS (which must hold one), else
    ../shared/data/prompts beside or in the working folder, else the starter corpus."""
    named = given or (Path(os.environ[CORPUS_ENV]) if os.environ.get(CORPUS_ENV) else None)
    if named is not None:
        if not (named / "gsm8k.jsonl").exists():
            raise DistillguardError(
                f"no prompt corpus in {named}: a folder of the prompt JSONL files "
                "(gsm8k.jsonl, codealpaca.jsonl, ...; see docs/tracing.md#simulator)"
            )
        return named
    here = Path.cwd()
    for path in (here / "shared/data/prompts", here.parent / "shared/data/prompts"):
        if (path / "gsm8k.jsonl").exists():
            return path
    return STARTER


def load_corpus(directory: Path) -> Corpus:
    corpus = Corpus()
    for pool, sources in POOLS.items():
        prompts: list[Prompt] = []
        for source in sources:
            path = directory / f"{source}.jsonl"
            if directory == STARTER and not path.exists():
                continue  # not redistributable: the starter corpus goes without it
            try:
                # Not splitlines(): prompts contain U+2028 and friends inside their strings.
                lines = path.read_text(encoding="utf-8").split("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise DistillguardError(f"cannot read {path}: {exc}") from None
            for number, line in enumerate(lines, 1):
                if line.strip():
                    prompts.append(_prompt(line, f"{path}:{number}"))
        if not prompts:
            raise DistillguardError(f"the prompt corpus {directory} has no {pool!r} prompts")
        corpus.pools[pool] = prompts
    return corpus


def _prompt(line: str, where: str) -> Prompt:
    try:
        row = json.loads(line)
        turns = tuple(row["turns"])
        if not turns or not all(isinstance(t, str) for t in turns):
            raise ValueError("`turns` must be a non-empty list of strings")
        return Prompt(turns, str(row.get("language", "")), str(row.get("category", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise DistillguardError(f"{where}: not a corpus record ({exc})") from None
