"""Published Merkle tree vectors against :mod:`gateway.audit.merkle`.

* ``vectors/c2sp-merkle-tree-7.json`` — the 7-entry worked example of c2sp.org/merkle-tree (symbolic labels);
  bound to bytes through the first seven RFC 6962 reference leaves.
* ``vectors/rfc6962-transparency-dev.json`` — the RFC 6962 reference test data (roots for sizes 0-8,
  inclusion and consistency proofs) as kept by transparency-dev/merkle, with that project's corruption probes.

Provenance of both is in the files and in docs/AUDIT.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.audit import merkle
from gateway.errors import GatewayError
from tests.paths import VECTORS
from tests.unit.audit._reference import ListTree, mth, path, proof

_VECTORS = VECTORS
_C2SP: dict[str, Any] = json.loads((_VECTORS / "c2sp-merkle-tree-7.json").read_text(encoding="utf-8"))
_CT: dict[str, Any] = json.loads((_VECTORS / "rfc6962-transparency-dev.json").read_text(encoding="utf-8"))
_LEAVES = [bytes.fromhex(leaf) for leaf in _CT["leaves"]]
_ROOTS = {int(size): bytes.fromhex(value) for size, value in _CT["roots"].items()}
_TREE = ListTree(_LEAVES)


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(value) for value in values]


def _labels() -> dict[str, bytes]:
    """The C2SP example's labels evaluated on the first seven reference leaves."""
    labels = {name: merkle.leaf_hash(_LEAVES[index]) for name, index in _C2SP["leaves"].items()}
    for name, (left, right) in _C2SP["nodes"].items():  # listed bottom-up in the file
        labels[name] = merkle.node_hash(labels[left], labels[right])
    return labels


# -- c2sp.org/merkle-tree worked example -----------------------------------------------------------------


def test_c2sp_example_root_is_the_rfc6962_reference_root_of_seven_leaves() -> None:
    assert _labels()["root"] == _ROOTS[7] == merkle.root(_LEAVES[:7]) == mth(_LEAVES[:7])


def test_c2sp_example_covers_every_leaf_and_every_size() -> None:
    assert [case["index"] for case in _C2SP["inclusion"]] == list(range(7))
    assert [case["from"] for case in _C2SP["consistency"]] == list(range(1, 8))
    published = [c for c in _C2SP["inclusion"] + _C2SP["consistency"] if c["published"]]
    assert len(published) == 7  # four inclusion and three consistency proofs are printed in the document


@pytest.mark.parametrize("case", _C2SP["inclusion"], ids=lambda c: f"d[{c['index']}]")
def test_c2sp_example_inclusion_proofs(case: dict[str, Any]) -> None:
    labels = _labels()
    expected = [labels[name] for name in case["proof"]]
    tree = ListTree(_LEAVES[:7])
    assert merkle.inclusion_proof(case["index"], 7, tree.hash_at) == expected
    assert path(case["index"], _LEAVES[:7]) == expected  # the naive RFC definition agrees with the document
    leaf = labels["abcdefg"[case["index"]]]
    assert merkle.verify_inclusion(leaf, case["index"], 7, expected, labels["root"])


@pytest.mark.parametrize("case", _C2SP["consistency"], ids=lambda c: f"{c['from']}-{c['to']}")
def test_c2sp_example_consistency_proofs(case: dict[str, Any]) -> None:
    labels = _labels()
    expected = [labels[name] for name in case["proof"]]
    m = case["from"]
    tree = ListTree(_LEAVES[:7])
    assert merkle.consistency_proof(m, 7, tree.hash_at) == expected
    assert proof(m, _LEAVES[:7]) == expected
    assert merkle.verify_consistency(m, 7, _ROOTS[m], labels["root"], expected)


# -- RFC 6962 reference data (transparency-dev/merkle) -----------------------------------------------------


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    assert merkle.root(_LEAVES[:size]) == _ROOTS[size] == mth(_LEAVES[:size])
    assert merkle.root_from_leaf_hashes(merkle.leaf_hash(x) for x in _LEAVES[:size]) == _ROOTS[size]


def test_empty_root_and_single_leaf() -> None:
    assert _ROOTS[0] == merkle.EMPTY_ROOT
    assert merkle.leaf_hash(b"") == _ROOTS[1]


@pytest.mark.parametrize("case", _CT["inclusion"], ids=lambda c: f"{c['index']}@{c['size']}")
def test_reference_inclusion_proofs(case: dict[str, Any]) -> None:
    index, size, expected = case["index"], case["size"], _hexes(case["proof"])
    assert merkle.inclusion_proof(index, size, ListTree(_LEAVES[:size]).hash_at) == expected
    leaf = merkle.leaf_hash(_LEAVES[index])
    root = _ROOTS[size]
    assert merkle.verify_inclusion(leaf, index, size, expected, root)
    # transparency-dev's corruption probes (corruptInclusionProof): each must fail.
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    probes: list[tuple[bytes, int, int, list[bytes], bytes]] = [
        (leaf, index - 1, size, expected, root),
        (leaf, index + 1, size, expected, root),
        (leaf, index ^ 2, size, expected, root),
        (leaf, index, size * 2, expected, root),
        (leaf, index, size // 2, expected, root),
        (b"WrongLeaf", index, size, expected, root),
        (leaf, index, size, expected, merkle.EMPTY_ROOT),
        (leaf, index, size, expected, some),
        (leaf, index, size, [*expected, b""], root),
        (leaf, index, size, [*expected, root], root),
        (leaf, index, size, [b"", *expected], root),
        (leaf, index, size, [root, *expected], root),
    ]
    for i in range(len(expected)):
        wrong = list(expected)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((leaf, index, size, wrong, root))
    if expected:
        probes.append((leaf, index, size, expected[:-1], root))
    if len(expected) > 1:
        probes.append((leaf, index, size, [expected[0], some, *expected[1:]], root))
    for probe in probes:
        assert not merkle.verify_inclusion(*probe), probe


@pytest.mark.parametrize("case", _CT["consistency"], ids=lambda c: f"{c['from']}-{c['to']}")
def test_reference_consistency_proofs(case: dict[str, Any]) -> None:
    m, n, expected = case["from"], case["to"], _hexes(case["proof"])
    assert merkle.consistency_proof(m, n, ListTree(_LEAVES[:n]).hash_at) == expected
    root1, root2 = _ROOTS[m], _ROOTS[n]
    assert merkle.verify_consistency(m, n, root1, root2, expected)
    if not expected:
        return
    # transparency-dev's corruption probes (corruptConsistencyProof): each must fail.
    wrong_root = b"WrongRoot"
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (m - 1, n, root1, root2, expected),
        (m + 1, n, root1, root2, expected),
        (m ^ 2, n, root1, root2, expected),
        (m, n * 2, root1, root2, expected),
        (m, n // 2, root1, root2, expected),
        (m, n, wrong_root, root2, expected),
        (m, n, root1, wrong_root, expected),
        (m, n, root2, root1, expected),
        (m, n, root1, root2, []),
        (m, n, root1, root2, [*expected, b""]),
        (m, n, root1, root2, [*expected, root1]),
        (m, n, root1, root2, [*expected, root2]),
        (m, n, root1, root2, [b"", *expected]),
        (m, n, root1, root2, [root1, *expected]),
        (m, n, root1, root2, [root2, *expected]),
        (m, n, root1, root2, [expected[0], *expected]),
        (m, n, root1, root2, expected[:-1]),
    ]
    for i in range(len(expected)):
        wrong = list(expected)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append((m, n, root1, root2, wrong))
    for probe in probes:
        assert not merkle.verify_consistency(*probe), probe


def test_consistency_edge_cases_as_transparency_dev() -> None:
    """TestVerifyConsistency's table: trivially consistent sizes and the ways they can still be wrong."""
    empty = merkle.EMPTY_ROOT
    root1, root2 = b"1" * 32, b"2" * 32
    assert merkle.verify_consistency(0, 0, root1, root1, [])
    assert merkle.verify_consistency(0, 1, root1, root2, [])
    assert merkle.verify_consistency(1, 1, root2, root2, [])
    assert not merkle.verify_consistency(0, 0, root1, root2, [])
    assert not merkle.verify_consistency(1, 1, root1, root2, [])
    assert not merkle.verify_consistency(1, 0, root1, root2, [])
    assert not merkle.verify_consistency(2, 1, root1, root2, [])
    assert not merkle.verify_consistency(1, 2, root1, root2, [])
    assert not merkle.verify_consistency(0, 0, empty, empty, [empty])
    assert not merkle.verify_consistency(0, 1, empty, empty, [empty])
    assert not merkle.verify_consistency(1, 1, empty, empty, [empty])


def test_inclusion_edge_cases() -> None:
    some = b"s" * 32
    for index, size in [(0, 0), (1, 0), (2, 1)]:
        assert not merkle.verify_inclusion(some, index, size, [], some)
    data_hash = merkle.leaf_hash(b"data")
    assert merkle.verify_inclusion(data_hash, 0, 1, [], data_hash)
    assert not merkle.verify_inclusion(data_hash, 0, 1, [], b"")
    assert not merkle.verify_inclusion(b"", 0, 1, [], data_hash)


def test_generators_reject_impossible_requests() -> None:
    with pytest.raises(GatewayError):
        merkle.inclusion_proof(7, 7, _TREE.hash_at)
    with pytest.raises(GatewayError):
        merkle.inclusion_proof(-1, 7, _TREE.hash_at)
    with pytest.raises(GatewayError):
        merkle.consistency_proof(8, 7, _TREE.hash_at)
    assert merkle.consistency_proof(0, 7, _TREE.hash_at) == []
    assert merkle.consistency_proof(7, 7, _TREE.hash_at) == []
