"""Stages `mma shard` and `mma cache`, and the readers of what they write: WebDataset tar shards
grouped by test fold and their index, the clip sampler (frames, augmentation, spectrogram window),
the streaming loader, and the zarr cache of frozen patch embeddings. May import: `core`, `weights`, `data`,
`prep`."""
