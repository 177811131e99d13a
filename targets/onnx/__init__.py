"""The onnx export target (see ../base.py for the protocol)."""
