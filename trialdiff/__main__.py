"""Run trialdiff as `python -m trialdiff`."""

from .cli import main

main()
