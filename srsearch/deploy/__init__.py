"""Deployment: LiteRT export of a model (checked against PyTorch), the graph rewrites it needs,
and the `.tflite` model runner."""
