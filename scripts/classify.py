#!/usr/bin/env python
"""``hf-losses classify`` from a checkout: the application is :mod:`hf_losses.apps.classify`."""

from hf_losses.apps.classify import cli

if __name__ == "__main__":
    cli()
