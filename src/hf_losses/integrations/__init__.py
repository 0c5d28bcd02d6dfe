"""Integrations with other training libraries (optional extras): ``hf_losses.integrations.trl``."""
