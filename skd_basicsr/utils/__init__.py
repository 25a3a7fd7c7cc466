"""Helpers of the deploy commands: image I/O, tiled inference, the network to run, ONNX export and running."""
