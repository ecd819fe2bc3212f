"""Offline side: train DIN, export the dense graph to ONNX, publish a bundle to Redis."""
