"""Errors a user can cause and fix: the CLI prints their message on one line and exits 2."""


class DistillguardError(Exception):
    """Base class for input and configuration errors (never for bugs)."""


class KeyFileError(DistillguardError):
    """A watermark key file is missing, unreadable or malformed."""


class VocabularyMismatchError(DistillguardError):
    """Token ids or a tokenizer do not fit the watermark's vocabulary."""


class InputTooShortError(DistillguardError):
    """A text has no token windows left to score."""


class ModelUnavailableError(DistillguardError):
    """The bundled model or the `model` extra is not installed."""


class KeyFileExistsError(KeyFileError):
    """A key file is already there; saving never replaces one unless asked to."""
