"""RFC 6962 Merkle trees (as restated by c2sp.org/merkle-tree): hashes, proofs and their verification.

Proof *generation* follows the recursive definitions of RFC 6962 section 2.1 (PATH, SUBPROOF) but reads the
tree through a ``hash_at(level, index)`` callback: the hash of the perfect subtree of ``2**level`` leaves that
starts at leaf ``index * 2**level``. Every stored Merkle tree (tiles, a database, a list in memory) can answer
that, and nothing else is needed: the hash of any other range is combined from perfect subtrees here.

Proof *verification* is the iterative algorithm of RFC 9162 sections 2.1.3.2 and 2.1.4.2 (also in
c2sp.org/merkle-tree), which needs no tree and checks the proof length exactly. Verifiers return ``False`` for
any bad input and never raise: they sit on the path of data an attacker controls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeAlias

from gateway.errors import GatewayError, Reason

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HashAt",
    "MerkleAccumulator",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_leaf_hashes",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
#: MTH({}) = SHA-256 of the empty string (RFC 6962 section 2.1).
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

#: ``hash_at(level, index)``: the hash of the perfect subtree over leaves
#: ``[index * 2**level, (index + 1) * 2**level)``; level 0 is the leaf hashes.
HashAt: TypeAlias = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the domain-separated hash of one entry."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): the size of the left subtree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def root(entries: Iterable[bytes]) -> bytes:
    """MTH of a list of entries (raw leaf data, hashed here), in O(log n) memory."""
    accumulator = MerkleAccumulator()
    for entry in entries:
        accumulator.append(entry)
    return accumulator.root()


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """MTH of a tree given its leaf hashes (already ``leaf_hash``-ed)."""
    accumulator = MerkleAccumulator()
    for value in hashes:
        accumulator.append_leaf_hash(value)
    return accumulator.root()


def subtree_hash(start: int, end: int, hash_at: HashAt) -> bytes:
    """MTH of the leaves ``[start, end)`` as RFC 6962 defines it for a tree that begins at ``start``.

    Only ranges that occur in the RFC recursion are meaningful (``start`` a multiple of the largest power of
    two below ``end - start``); those split into at most ~log2 perfect subtrees, read through ``hash_at``.
    """
    count = end - start
    if count <= 0:
        raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"empty subtree [{start}, {end})")
    if count & (count - 1) == 0:  # perfect subtree
        level = count.bit_length() - 1
        if start % count:
            raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"unaligned subtree [{start}, {end})")
        return hash_at(level, start >> level)
    k = _split(count)
    return node_hash(subtree_hash(start, start + k, hash_at), subtree_hash(start + k, end, hash_at))


def inclusion_proof(index: int, size: int, hash_at: HashAt) -> list[bytes]:
    """PATH(index, D[size]) of RFC 6962 section 2.1.1: sibling hashes from the leaf up to the root's child."""
    if not 0 <= index < size:
        raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"no leaf {index} in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:  # descend from the root; the top-level sibling is the *last* proof element
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end, hash_at))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, hash_at))
            start += k
    path.reverse()
    return path


def consistency_proof(m: int, n: int, hash_at: HashAt) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 section 2.1.2 (SUBPROOF with b = true); empty for m == 0 or m == n."""
    if not 0 <= m <= n:
        raise GatewayError(Reason.PROOF_OUT_OF_RANGE, f"no consistency proof from size {m} to size {n}")
    if m in (0, n):
        return []
    proof: list[bytes] = []
    start, end, old, complete = 0, n, m, True
    while True:
        count = end - start
        if old == count:
            if not complete:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
                proof.append(subtree_hash(start, end, hash_at))
            break
        k = _split(count)
        if old <= k:
            proof.append(subtree_hash(start + k, end, hash_at))
            end = start + k
        else:
            proof.append(subtree_hash(start, start + k, hash_at))
            start += k
            old -= k
            complete = False
    proof.reverse()
    return proof


def _valid_hashes(*values: bytes) -> bool:
    return all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in values)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """True when ``proof`` shows the leaf *hash* ``leaf`` at ``index`` in the tree ``(size, root_hash)``.

    RFC 9162 section 2.1.3.2. The proof must have exactly the length the tree shape implies.
    """
    if not (_valid_hashes(leaf, root_hash, *proof) and 0 <= index < size):
        return False
    fn, sn, value = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False  # too many proof hashes
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            value = node_hash(value, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and value == root_hash


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]) -> bool:
    """True when ``proof`` shows the tree ``(m, root_m)`` is a prefix of ``(n, root_n)``.

    RFC 9162 section 2.1.4.2, with the edge cases of c2sp.org/merkle-tree: m == n needs an empty proof and
    equal roots; m == 0 needs an empty proof (every tree extends the empty tree).
    """
    if not (_valid_hashes(root_m, root_n, *proof) and 0 <= m <= n):
        return False
    if m == n:
        return not proof and root_m == root_n
    if m == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: the old root is itself a node of the new tree
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for value in path[1:]:
        if sn == 0:
            return False  # too many proof hashes
        if fn & 1 or fn == sn:
            fr = node_hash(value, fr)
            sr = node_hash(value, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, value)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root_m and sr == root_n


class MerkleAccumulator:
    """An append-only Merkle tree that keeps only its *peaks*: O(log n) memory, any number of leaves.

    The peaks are the roots of the perfect subtrees a tree of ``size`` leaves decomposes into, one per set bit
    of ``size``, largest (leftmost) first; the root folds them right to left. This is what an auditor needs to
    replay millions of entries and compare the final root with a checkpoint, and what the tile log uses to
    keep its current root without reading anything back.
    """

    __slots__ = ("_peaks", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._peaks: list[bytes] = []

    @classmethod
    def from_peaks(cls, size: int, peaks: Sequence[bytes]) -> MerkleAccumulator:
        """Resume from a stored state (``peaks`` as returned by :attr:`peaks`)."""
        if size < 0 or len(peaks) != size.bit_count() or not _valid_hashes(*peaks):
            raise GatewayError(
                Reason.PROOF_OUT_OF_RANGE, f"{len(peaks)} peaks do not describe a tree of size {size}"
            )
        accumulator = cls()
        accumulator._size = size
        accumulator._peaks = list(peaks)
        return accumulator

    @classmethod
    def from_tree(cls, size: int, hash_at: HashAt) -> MerkleAccumulator:
        """The peaks of a stored tree of ``size`` leaves, read through ``hash_at`` (one read per set bit)."""
        peaks: list[bytes] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                peaks.append(hash_at(level, start >> level))
                start += 1 << level
        return cls.from_peaks(size, peaks)

    @property
    def size(self) -> int:
        return self._size

    @property
    def peaks(self) -> tuple[bytes, ...]:
        return tuple(self._peaks)

    def copy(self) -> MerkleAccumulator:
        return MerkleAccumulator.from_peaks(self._size, self._peaks)

    def append(self, entry: bytes) -> None:
        """Append one entry (raw leaf data)."""
        self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, value: bytes) -> None:
        """Append one leaf by its hash; merges equal-sized peaks (a binary carry)."""
        if not _valid_hashes(value):
            raise GatewayError(Reason.PROOF_OUT_OF_RANGE, "a leaf hash is 32 bytes")
        peaks = self._peaks
        peaks.append(value)
        carry = self._size
        while carry & 1:
            right = peaks.pop()
            peaks[-1] = node_hash(peaks[-1], right)
            carry >>= 1
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves appended so far (``EMPTY_ROOT`` for none)."""
        if not self._peaks:
            return EMPTY_ROOT
        value = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            value = node_hash(peak, value)
        return value
