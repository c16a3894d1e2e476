"""Shared foundations every stage may import: typed configs and presets, workspace paths,
atomic I/O and hashing, the error types, logging, progress bars, the device rule, figures, and the
seeded model build. `core` imports nothing else from `pipeline` (it uses `model` for configs and
the network)."""
