"""distillguard: defend an LLM API against adversarial distillation."""

__version__ = "0.1.0"
