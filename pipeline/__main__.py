"""``python -m pipeline`` runs the ``muon-pipeline`` command."""

from .cli import main

main()
