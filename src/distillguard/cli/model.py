"""`generate` and `demo`: the bundled model's answers, watermarked or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from distillguard.cli.common import bundled_engine, progress_bar
from distillguard.config import load_settings
from distillguard.errors import DistillguardError
from distillguard.watermark import Watermark, WatermarkConfig, WatermarkKey

DEMO_PROMPTS = (
    "Explain why the sky is blue to a ten-year-old.",
    "Give me three practical tips for learning a new programming language.",
    "Describe how a bill becomes a law.",
)


def generate(
    prompt: Annotated[
        str | None, typer.Argument(metavar="PROMPT", help="A user message to answer.")
    ] = None,
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
    engine = bundled_engine(settings)
    with progress_bar() as progress:
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
    engine = bundled_engine(settings)
    gen = settings.generation
    table = Table(
        title=f"watermark {key.key_id} ({watermark.config.scheme}, "
        f"γ={watermark.config.gamma}, δ={watermark.config.delta})"
    )
    for column in ("answer", "watermarked", "scored", "green", "p-value"):
        table.add_column(column, overflow="fold")
    with progress_bar() as progress:
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
