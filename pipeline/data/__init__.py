"""Datasets as they are distributed: the label sets and fold protocol of DFEW and MAFW, the
manifests read from the official split files, the synthetic dataset generator, and the paper's
published numbers and the published splits. May import: `core`, `weights`."""
