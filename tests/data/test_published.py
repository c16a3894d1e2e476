"""The shipped published splits: counts, one test fold per clip, labels in mma's class order."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.data.datasets import DATASETS
from pipeline.data.published import published_splits_path, read_published_split

EXPECTED = {"dfew": 11697, "mafw": 9172}


@pytest.mark.parametrize("dataset", ["dfew", "mafw"])
def test_published_split_counts_folds_and_labels(dataset):
    split = read_published_split(dataset)
    assert len(split) == EXPECTED[dataset]
    # one row per clip id (a duplicate would collapse in the dict)
    lines = published_splits_path(dataset).read_text().splitlines()
    assert len(lines) == EXPECTED[dataset] + 1
    classes = DATASETS[dataset].classes
    for clip in split.values():
        assert classes[clip.label] == clip.label_name
        assert 1 <= clip.test_fold <= 5
        assert clip.authors_num_frames > 0
    per_fold = Counter((c.test_fold, c.label) for c in split.values())
    for label in range(len(classes)):
        counts = [per_fold[(k, label)] for k in range(1, 6)]
        assert min(counts) > 0 and max(counts) - min(counts) <= 1, (classes[label], counts)


def test_published_split_is_found_from_the_package_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert published_splits_path("mafw").is_file()


def test_synth_has_no_published_split():
    from pipeline.core.errors import MMAError

    with pytest.raises(MMAError, match="no published split"):
        published_splits_path("synth")
