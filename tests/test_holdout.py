"""pipeline.data.holdout: the select / report parts of a split."""
import pytest

from pipeline.data.holdout import SELECT_SHARE, selection_part, split_parts


def test_parts_partition_the_ids_in_order():
    ids = [f"{i:05d}" for i in range(400)]
    parts = split_parts(ids)
    assert sorted(parts["select"] + parts["report"]) == ids
    assert not set(parts["select"]) & set(parts["report"])
    assert parts["select"] == sorted(parts["select"])          # the ids' order is kept
    assert 0.4 < len(parts["select"]) / len(ids) < 0.6          # about SELECT_SHARE of them
    assert SELECT_SHARE == 0.5


def test_membership_depends_on_the_id_only():
    ids = [f"2007_{i:06d}" for i in range(300)]
    whole = selection_part(ids, 0.5)
    # another order, a subset, and other ids beside them do not move an id between parts
    assert selection_part(list(reversed(ids)), 0.5) == whole
    assert selection_part(ids[:50] + ["x", "y"], 0.5) - {"x", "y"} == whole & set(ids[:50])
    # a larger share only adds ids
    assert whole <= selection_part(ids, 0.7)
    assert selection_part(ids, 0.0) == set() and selection_part(ids, 1.0) == set(ids)


def test_bad_share_is_refused():
    with pytest.raises(ValueError, match="share"):
        selection_part(["a"], 1.5)
    with pytest.raises(ValueError, match="strictly"):
        split_parts(["a"], 1.0)
