"""Entry point: python runner.py --model=NAME [--param=value ...] (see README.md)."""

import sys

from innerssl.runner import main

if __name__ == "__main__":
    sys.exit(main())
