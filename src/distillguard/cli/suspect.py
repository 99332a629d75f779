"""`suspect test`: is a suspect model trained on our watermarked outputs, and whose?"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import typer

from distillguard.cli.common import (
    StoreOption,
    bundled_engine,
    check_writable,
    err,
    progress_bar,
    store_url,
    write_json,
)
from distillguard.config import load_settings

suspect_app = typer.Typer(
    help="Test a suspect model for our watermark: trained on our outputs, and whose?",
    no_args_is_help=True,
)


@contextmanager
def _tracked() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A `track` for `suspect.run.run`: the progress bar starts with the counted phase,
    after our model has loaded (rich shows one live display at a time)."""
    with ExitStack() as stack:

        def track(phase: str, total: int) -> Callable[[int], None]:
            progress = stack.enter_context(progress_bar())
            task = progress.add_task(phase, total=total)
            return lambda n: progress.advance(task, n)

        yield track


@suspect_app.command("test")
def suspect_test(
    key: Annotated[Path | None, typer.Option("--key", help="The watermark key file.")] = None,
    vllm_config: Annotated[
        Path | None,
        typer.Option(
            help="API mode, instead of --key: vLLM's own --watermark-config JSON (its key)."
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="With --vllm-config: tokenizer.json of the model vLLM served."),
    ] = None,
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
    save: Annotated[
        bool, typer.Option("--save", help="Keep the verdict in the store (the console shows it).")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Test a suspect for our watermark, under the key (or each cohort's sub-key,
    Holm-corrected), beside a control of unused keys that must stay non-significant.
    Open weights (--model, --corpus): it reads our answers. API (--api-url, --api-model,
    --prompts): it answers our prompts. The API key is read from $DISTILLGUARD_SUSPECT_API_KEY."""
    from distillguard.store import SuspectStore, open_engine
    from distillguard.suspect.run import SuspectTest, run, validate

    test = SuspectTest(
        key=key,
        vllm_config=vllm_config,
        tokenizer=tokenizer,
        model=model,
        api_url=api_url,
        api_model=api_model,
        corpus=corpus,
        prompts=prompts,
        cohorts=cohorts,
        alpha=alpha,
        budget=budget,
        batch_size=batch_size,
        max_tokens=max_tokens,
        frequent=frequent,
    )
    validate(test)
    check_writable(json_out)
    engine = open_engine(store_url(store)) if save else None  # a bad URL fails before the run
    with _tracked() as track:
        document = run(test, lambda: bundled_engine(load_settings()), track)
    if json_out is not None:
        write_json(json_out, document)
    if engine is not None:
        suspect = f"{api_url} {api_model}" if api_url else str(model)
        SuspectStore(engine).save(suspect, document)
    print(json.dumps(document))
    for note in document.get("notes", []):
        err.print(f"note: {note}")
    best = document["best"]
    where = (
        f"cohort {best['key']}'s {best['scored']:,} of {document['scored']:,} windows"
        if document["windows"] == "per cohort"
        else f"{document['scored']:,} windows ({document['windows']})"
    )
    err.print(
        f"{document['verdict']}: p = {document['p_value']:.3g} over {where}; "
        f"control p = {document['control']['p_value']:.3g}"
    )
