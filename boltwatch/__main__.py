"""``python -m boltwatch``."""

from boltwatch.cli import main

main()
