"""brats: fast 3D brain-tumour segmentation on BraTS (ingest, train, score)."""

__version__ = "0.2.0"
