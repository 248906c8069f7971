"""Raw BraTS NIfTI to store: discovery, validation, preprocessing and the Dask ingest job."""
