"""The bottom layer every package may import: user errors and the layers shared by the
hand-designed models and the supernet. It imports nothing from ``supernet``, ``android_bench``
or ``srsearch`` (tests/test_layers.py checks)."""
