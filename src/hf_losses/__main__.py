"""``python -m hf_losses translate|classify|compare ...``: the same as the ``hf-losses`` command."""

import sys

from .cli import main

sys.exit(main())
