"""`python -m tinygpt_cli` (and `torchrun -m tinygpt_cli`) runs the CLI."""

from .cli import main

main()
