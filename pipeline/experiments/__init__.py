"""The paper's experiments as sweeps (`mma sweep`): the presets of its tables, and the sweep
machinery (job specs, submitit executors, job state, sweep reports). May import every stage
before it."""
