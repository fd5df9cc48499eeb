"""Data pipeline: splits, preprocessing into shards, the Grain loader."""
