"""Run trialdiff as `python -m trialdiff`."""

from .cli import main

if __name__ == "__main__":  # importing it (multiprocessing's spawn does) runs nothing
    main()
