#!/usr/bin/env python
"""``hf-losses compare`` from a checkout: the application is :func:`hf_losses.apps.compare.main`."""

import sys

from hf_losses.apps.compare import main

if __name__ == "__main__":
    sys.exit(main())
