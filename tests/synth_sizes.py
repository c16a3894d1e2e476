"""Sizes of the shared synthetic dataset the session fixtures build (imported by tests that check counts).

Small enough for CI (2 CPU cores), large enough that a tiny model learns above chance.
"""

SYNTH_CLASSES = 4
SYNTH_CLIPS_PER_CLASS = 10
SYNTH_SECONDS = 1.6
TEST_CROP_SIZE = 64
