"""``python -m tracegrad ...``: the same command line as the ``tracegrad`` script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
