"""`generate`: the bundled model's answers, watermarked or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from distillguard.cli.common import bundled_engine, progress_bar
from distillguard.config import load_settings
from distillguard.errors import DistillguardError
from distillguard.watermark import Watermark, WatermarkKey


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
