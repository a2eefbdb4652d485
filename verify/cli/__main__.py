"""`python -m verify.cli ...` is the same as `python -m verify ...` and the `verify` console script."""

import sys

from verify.cli import main

sys.exit(main())
