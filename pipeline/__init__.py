"""Data and stage logic of mma: configs, manifests, prep, shards, cache, training, reports, sweeps."""
