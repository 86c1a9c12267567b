"""latentsync-harness: benchmark and optimise LatentSync lip-sync inference."""
