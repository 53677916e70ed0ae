"""Training: the shared LightningModule base, data module and trainer (`training`), stage-1 supernet
training, and the training jobs `compare` and the pipeline run."""
