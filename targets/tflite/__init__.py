"""The tflite export target (see ../base.py for the protocol)."""
