"""Stage `mma prep`: per clip, decode the video (ffmpeg/PyAV), detect and crop faces (MTCNN),
compute the log-mel filterbank, and write the clip folder; `cluster` runs it on Dask (local or
SLURM). May import: `core`, `weights`, `data`."""
