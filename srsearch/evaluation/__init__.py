"""Scoring models: PSNR/SSIM metrics, evaluation on image sets, the crops grid of the report."""
