"""A deliberately naive RFC 6962 section 2.1 implementation, written from the recursive definitions only.

It shares no code with :mod:`gateway.audit.merkle` (which reads trees through ``hash_at`` and verifies
iteratively), so agreement between the two is evidence that both follow the RFC. Quadratic; small trees only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def mth(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 section 2.1."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:])).digest()


def path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 section 2.1.1."""
    n = len(entries)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def proof(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 section 2.1.2 (for 0 < m <= n; empty for m == n)."""
    return _subproof(m, entries, True)


def _subproof(m: int, entries: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, entries[:k], b), mth(entries[k:])]
    return [*_subproof(m - k, entries[k:], False), mth(entries[:k])]


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class ListTree:
    """An in-memory tree of entries with the ``hash_at`` callback the gateway's proof generators expect."""

    def __init__(self, entries: Sequence[bytes] = ()) -> None:
        self.entries = list(entries)

    def hash_at(self, level: int, index: int) -> bytes:
        start = index << level
        return mth(self.entries[start : start + (1 << level)])
