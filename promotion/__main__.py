"""`python -m promotion`: the same command line as the `promotion` console script."""

import sys

from promotion.cli import main

if __name__ == "__main__":
    sys.exit(main())
