"""A fixed part of a split for choosing settings, the rest for reporting (pure Python).

Comparing settings (a seed rule, CRF kernels, a schedule) on the same images whose mIoU is then
reported overstates the chosen setting. :func:`selection_part` splits a split's ids into a
**select** part, on which settings are compared, and a **report** part, whose numbers are the ones
to publish. Membership is decided per id by a hash (SHA-1 of ``salt + id``), so it does not
depend on the order of the ids, on which other ids the split holds, on the experiment seed or on
the process: the same image is in the same part in every run and on every machine.
"""
from __future__ import annotations

import hashlib

__all__ = ["PARTS", "SELECT_SHARE", "selection_part", "split_parts"]

PARTS = ("select", "report")
SELECT_SHARE = 0.5      # the share of a split's ids in the select part (the eval stage's parts)
_SALT = "wsss-select:"


def _unit(img_id: str) -> float:
    """A number in [0, 1) fixed by ``img_id``: the first 8 bytes of SHA-1(salt + id)."""
    digest = hashlib.sha1((_SALT + str(img_id)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def selection_part(ids, share: float) -> set[str]:
    """The ids of the select part: every id whose hash value is below ``share`` (about
    ``share × len(ids)`` of them; 0 → none, 1 → all)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    return {str(i) for i in ids if _unit(str(i)) < share}


def split_parts(ids, share: float = SELECT_SHARE) -> dict[str, list[str]]:
    """``{"select": [...], "report": [...]}`` of ``ids`` (order kept) for ``0 < share < 1``."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be strictly between 0 and 1, got {share}")
    chosen = selection_part(ids, share)
    select, report = PARTS
    return {select: [i for i in ids if str(i) in chosen],
            report: [i for i in ids if str(i) not in chosen]}
