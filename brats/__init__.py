"""brats: fast 3D brain-tumour segmentation on BraTS (ingest, train, score, predict)."""

__version__ = "0.4.0"
