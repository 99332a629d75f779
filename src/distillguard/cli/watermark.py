"""`watermark keygen` and `watermark detect`: detection on token ids never loads torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from distillguard.cli.common import conversion_notice, err
from distillguard.config import load_settings
from distillguard.errors import DistillguardError, VocabularyMismatchError
from distillguard.watermark import Watermark, WatermarkConfig, WatermarkKey
from distillguard.watermark.cohorts import Cohorts
from distillguard.watermark.vllm_gumbel import VllmWatermark

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
    key: Annotated[Path | None, typer.Option(help="Watermark key file.")] = None,
    vllm_config: Annotated[
        Path | None,
        typer.Option(
            help="Instead of --key: a JSON file with vLLM's own --watermark-config "
            "(key, algorithm, context_width, alpha), to read vLLM's built-in marks."
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="tokenizer.json of the model that wrote the texts (default: bundled)."),
    ] = None,
    cohorts: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With --key (the gateway's master key): test each line of an event export "
            "(`events export`) under its `cohort`'s sub-key; untestable lines are reported "
            "and skipped.",
        ),
    ] = None,
) -> None:
    """Test texts for the watermark: one JSON object per input on stdout."""
    from distillguard.watermark.inputs import read_inputs, tokenize_inputs

    if (key is None) == (vllm_config is None):
        raise DistillguardError("detect needs exactly one of --key or --vllm-config")
    if cohorts is not None:
        if key is None:
            raise DistillguardError("--cohorts needs --key (the gateway's master key)")
        _detect_cohorts(files, Cohorts(WatermarkKey.load(key), cohorts), tokenizer)
        return
    items = read_inputs(files)
    if vllm_config is not None:
        _detect_vllm(items, VllmWatermark.load(vllm_config), tokenizer)
        return
    assert key is not None
    watermark = Watermark.from_key(WatermarkKey.load(key))
    needs = any(i.needs_tokenizer for i in items)
    encode = _encoder(tokenizer, watermark.config.vocab_size) if needs else None
    pairs = tokenize_inputs(items, encode)
    results = watermark.detect_batch([p[0] for p in pairs], [p[1] for p in pairs])
    for item, result in zip(items, results, strict=True):
        if result.total_windows == 0:  # checked for all inputs before any output
            raise DistillguardError(
                f"{item.name}: too short for context width {watermark.config.context_width}"
            )
    for item, result in zip(items, results, strict=True):
        print(json.dumps({"input": item.name, "key_id": watermark.key.key_id, **result.to_dict()}))


def _detect_cohorts(files: list[str], cohorts: Cohorts, tokenizer: Path | None) -> None:
    """Each answer under its own cohort's key. An event export holds lines no test can use
    (refusals, embeddings, answers shorter than a window): each is said and skipped."""
    from distillguard.watermark.inputs import read_inputs, tokenize_inputs

    skipped: list[tuple[str, str]] = []
    items = []
    for item in read_inputs(files, skipped):
        if item.cohort is None or not 0 <= item.cohort < cohorts.count:
            skipped.append((item.name, f"no cohort in [0, {cohorts.count})"))
        else:
            items.append(item)
    size = cohorts.watermark(0).config.vocab_size
    needs = any(i.needs_tokenizer for i in items)
    pairs = tokenize_inputs(items, _encoder(tokenizer, size) if needs else None)
    tested = 0
    for item, (ids, prompt_ids) in zip(items, pairs, strict=True):
        watermark = cohorts.watermark(item.cohort)
        result = watermark.detect_batch([ids], [prompt_ids])[0]
        if result.total_windows == 0:
            skipped.append((item.name, "too short to score"))
            continue
        tested += 1
        line = {"input": item.name, "cohort": item.cohort, "key_id": watermark.key.key_id}
        print(json.dumps({**line, **result.to_dict()}))
    for name, reason in skipped:
        print(json.dumps({"input": name, "skipped": reason}))
    err.print(f"{tested} tested, {len(skipped)} skipped")


def _detect_vllm(items, mark: VllmWatermark, tokenizer: Path | None) -> None:
    """vLLM scores the answer's tokens only: prompts given with an input are not used."""
    from distillguard.watermark.inputs import tokenize_inputs

    encode = _encoder(tokenizer, None) if any(i.token_ids is None for i in items) else None
    pairs = tokenize_inputs([replace(i, prompt=None, prompt_ids=None) for i in items], encode)
    results = [mark.detect(ids) for ids, _ in pairs]
    for item, result in zip(items, results, strict=True):
        if result.scored == 0:
            raise DistillguardError(f"{item.name}: no tokens to score")
    for item, result in zip(items, results, strict=True):
        print(json.dumps({"input": item.name, "key_id": None, **result.to_dict()}))


def _encoder(path: Path | None, vocab_size: int | None) -> Callable[[str], list[int]]:
    """Text -> token ids with the model's tokenizer (the bundled one unless named)."""
    from distillguard.engine.bundled import text_tokenizer

    encoder = text_tokenizer(load_settings().cache_dir, path, on_convert=conversion_notice)
    size = encoder.get_vocab_size()
    if vocab_size is not None and size != vocab_size:
        raise VocabularyMismatchError(
            f"the tokenizer has {size} tokens but the key was made for a "
            f"vocabulary of {vocab_size}; give token ids from the key's model"
        )
    return lambda text: encoder.encode(text, add_special_tokens=False).ids
