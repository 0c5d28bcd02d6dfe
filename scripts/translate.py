#!/usr/bin/env python
"""``hf-losses translate`` from a checkout: the application is :mod:`hf_losses.apps.translate`."""

from hf_losses.apps.translate import cli

if __name__ == "__main__":
    cli()
