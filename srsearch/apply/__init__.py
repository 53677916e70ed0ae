"""Applying a trained model: upscaling images and video files (`srsearch upscale`)."""
