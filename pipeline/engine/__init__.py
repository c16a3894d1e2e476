"""Training and evaluation (`mma train`, `mma eval`): batch plumbing shared by both loops, the
trainer and its run directory, the evaluator, metrics, torchrun/DDP helpers, and the import of
the authors' checkpoints. May import: `core`, `weights`, `data`, `prep`, `store`."""
