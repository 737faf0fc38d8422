"""`python -m openmonetize.cli`, the same as the `openmonetize` console script."""

from openmonetize.cli import main

main()
