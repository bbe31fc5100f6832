"""Command-line entry points (run as ``python -m espnet_oracle.bin.<name>``)."""
