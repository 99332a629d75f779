"""`watermark keygen` and `watermark detect`: detection on token ids never loads torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from distillguard.cli.common import conversion_notice, err
from distillguard.config import load_settings
from distillguard.errors import DistillguardError, VocabularyMismatchError
from distillguard.watermark import Watermark, WatermarkConfig, WatermarkKey

watermark_app = typer.Typer(help="Watermark keys and detection.", no_args_is_help=True)


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


def _encoder(watermark: Watermark) -> Callable[[str], list[int]]:
    from distillguard.engine.bundled import load_text_tokenizer

    tokenizer = load_text_tokenizer(load_settings().cache_dir, on_convert=conversion_notice)
    size = tokenizer.get_vocab_size()
    if size != watermark.config.vocab_size:
        raise VocabularyMismatchError(
            f"the bundled tokenizer has {size} tokens but the key was made for a "
            f"vocabulary of {watermark.config.vocab_size}; give token ids from the key's model"
        )
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids
