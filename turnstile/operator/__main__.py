"""``python -m turnstile.operator [flags]``: the same as ``turnstile operator [flags]``."""

import sys

from turnstile.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["operator", *sys.argv[1:]]))
