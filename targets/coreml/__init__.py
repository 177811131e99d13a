"""The coreml export target (see ../base.py for the protocol)."""
