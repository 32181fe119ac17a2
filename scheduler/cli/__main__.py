"""``python -m scheduler.cli``: the ``heartseg`` command line, as the console script runs it."""

from scheduler.cli import main

if __name__ == "__main__":
    main()
