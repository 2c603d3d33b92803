"""``python -m pipeline`` runs the ``muon-pipeline`` command."""

from .cli import run

run()
