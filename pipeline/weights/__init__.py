"""`mma weights`: the checkpoints the method needs, where they come from, and the weights folder.

`registry` lists the known files (MAE-Face, AudioMAE, the authors' trained models) with their
sources and licence notes; `store` keeps the folder and its `weights.json` (sha256 of every
file); `fetch` downloads the ones a plain HTTPS request can get; `resolve` gives stages their
encoder checkpoints (flags, else the weights folder) after the structure check of
`model.inspect`. May import: `core`.
"""
