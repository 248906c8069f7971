"""The Zarr store: paths, chunking and codecs (`layout`), the typed record and schema version (`schema`)."""
