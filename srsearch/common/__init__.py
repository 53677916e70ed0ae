"""Helpers every stage uses: user errors, atomic result files, output paths and the run-directory
lock, progress bars, settings, sizes, shared layers and quieting third-party output. They import
nothing above them."""
