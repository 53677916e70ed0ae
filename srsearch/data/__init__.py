"""Training and evaluation data: dataset specs and image sets, training patches, image file
reading and writing, and the dataset downloads."""
