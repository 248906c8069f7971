"""The Zarr store: the one place that knows paths, chunking, codecs and the schema version."""
