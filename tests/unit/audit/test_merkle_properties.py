"""Property tests: every generated proof verifies, and any single change to proof, root or leaf breaks it.

Trees are built from deterministic entries so a failing example is reproducible from its sizes alone; the
reference is the naive recursive RFC 6962 implementation in ``_reference`` (no code shared).
"""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import merkle
from tests.unit.audit._reference import mth, path, proof

_MAX = 300


@cache
def _entries() -> list[bytes]:
    return [b"entry-%d" % i for i in range(_MAX)]


@cache
def _leaf_hashes() -> list[bytes]:
    return [merkle.leaf_hash(entry) for entry in _entries()]


@cache
def _hash_at(level: int, index: int) -> bytes:
    start = index << level
    return merkle.root_from_leaf_hashes(_leaf_hashes()[start : start + (1 << level)])


@cache
def _root(size: int) -> bytes:
    return merkle.root_from_leaf_hashes(_leaf_hashes()[:size])


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[bit // 8 % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


@st.composite
def _index_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, _MAX))
    return draw(st.integers(0, size - 1)), size


@st.composite
def _two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(0, _MAX))
    return draw(st.integers(0, n)), n


@given(st.integers(0, 64))
def test_root_matches_the_rfc_definition(size: int) -> None:
    assert merkle.root(_entries()[:size]) == mth(_entries()[:size]) == _root(size)


@given(_index_in_tree())
def test_inclusion_proof_matches_rfc_path_and_verifies(case: tuple[int, int]) -> None:
    index, size = case
    generated = merkle.inclusion_proof(index, size, _hash_at)
    if size <= 64:
        assert generated == path(index, _entries()[:size])
    assert merkle.verify_inclusion(_leaf_hashes()[index], index, size, generated, _root(size))


@given(_two_sizes())
def test_consistency_proof_matches_rfc_proof_and_verifies(case: tuple[int, int]) -> None:
    m, n = case
    generated = merkle.consistency_proof(m, n, _hash_at)
    if m > 0 and n <= 64:
        assert generated == proof(m, _entries()[:n])
    assert merkle.verify_consistency(m, n, _root(m), _root(n), generated)


@given(_index_in_tree(), st.data())
def test_any_single_change_breaks_an_inclusion_proof(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    good = merkle.inclusion_proof(index, size, _hash_at)
    leaf, root = _leaf_hashes()[index], _root(size)
    bit = data.draw(st.integers(0, 255), label="bit")
    what = data.draw(st.sampled_from(["leaf", "root", "proof", "drop", "add", "index"]), label="what")
    if what == "leaf":
        assert not merkle.verify_inclusion(_flip(leaf, bit), index, size, good, root)
    elif what == "root":
        assert not merkle.verify_inclusion(leaf, index, size, good, _flip(root, bit))
    elif what == "proof" and good:
        position = data.draw(st.integers(0, len(good) - 1), label="position")
        bad = [*good[:position], _flip(good[position], bit), *good[position + 1 :]]
        assert not merkle.verify_inclusion(leaf, index, size, bad, root)
    elif what == "drop" and good:
        position = data.draw(st.integers(0, len(good) - 1), label="position")
        assert not merkle.verify_inclusion(leaf, index, size, good[:position] + good[position + 1 :], root)
    elif what == "add":
        position = data.draw(st.integers(0, len(good)), label="position")
        extra = data.draw(st.sampled_from([root, leaf, bytes(32)]), label="extra")
        assert not merkle.verify_inclusion(
            leaf, index, size, [*good[:position], extra, *good[position:]], root
        )
    elif what == "index" and size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
        assert not merkle.verify_inclusion(leaf, other, size, good, root)


@given(_two_sizes().filter(lambda c: 0 < c[0] < c[1]), st.data())
def test_any_single_change_breaks_a_consistency_proof(case: tuple[int, int], data: st.DataObject) -> None:
    m, n = case
    good = merkle.consistency_proof(m, n, _hash_at)
    old, new = _root(m), _root(n)
    bit = data.draw(st.integers(0, 255), label="bit")
    what = data.draw(st.sampled_from(["old", "new", "proof", "drop", "add"]), label="what")
    if what == "old":
        assert not merkle.verify_consistency(m, n, _flip(old, bit), new, good)
    elif what == "new":
        assert not merkle.verify_consistency(m, n, old, _flip(new, bit), good)
    elif what == "proof":
        position = data.draw(st.integers(0, len(good) - 1), label="position")
        bad = [*good[:position], _flip(good[position], bit), *good[position + 1 :]]
        assert not merkle.verify_consistency(m, n, old, new, bad)
    elif what == "drop":
        position = data.draw(st.integers(0, len(good) - 1), label="position")
        assert not merkle.verify_consistency(m, n, old, new, good[:position] + good[position + 1 :])
    else:
        position = data.draw(st.integers(0, len(good)), label="position")
        extra = data.draw(st.sampled_from([old, new, bytes(32)]), label="extra")
        assert not merkle.verify_consistency(m, n, old, new, [*good[:position], extra, *good[position:]])


@given(_two_sizes().filter(lambda c: 0 < c[0] < c[1]))
def test_a_fork_is_never_consistent(case: tuple[int, int]) -> None:
    """A tree that differs in one leaf below m cannot be proven to extend the honest tree of size m."""
    m, n = case
    forked = list(_leaf_hashes()[:n])
    forked[m - 1] = merkle.leaf_hash(b"forged")
    forked_root = merkle.root_from_leaf_hashes(forked)

    def forked_at(level: int, index: int) -> bytes:
        start = index << level
        return merkle.root_from_leaf_hashes(forked[start : start + (1 << level)])

    assert not merkle.verify_consistency(
        m, n, _root(m), forked_root, merkle.consistency_proof(m, n, forked_at)
    )
    assert not merkle.verify_consistency(
        m, n, _root(m), forked_root, merkle.consistency_proof(m, n, _hash_at)
    )


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=40), max_size=200), st.integers(0, 200))
def test_accumulator_matches_root_and_resumes_from_peaks(entries: list[bytes], cut: int) -> None:
    cut = min(cut, len(entries))
    first = merkle.MerkleAccumulator()
    for entry in entries[:cut]:
        first.append(entry)
    resumed = merkle.MerkleAccumulator.from_peaks(first.size, first.peaks)
    assert len(first.peaks) == cut.bit_count()
    for entry in entries[cut:]:
        resumed.append(entry)
    assert resumed.size == len(entries)
    assert resumed.root() == mth(entries)


@given(st.integers(0, _MAX))
def test_accumulator_from_a_stored_tree(size: int) -> None:
    assert merkle.MerkleAccumulator.from_tree(size, _hash_at).root() == _root(size)
