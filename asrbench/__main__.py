"""``python -m asrbench`` runs the command line, like the ``asrbench`` console script."""

from asrbench.cli import run_app

run_app()
