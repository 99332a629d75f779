"""`python -m distillguard`: the same command as the `distillguard` console script."""

from distillguard.cli import main

main()
