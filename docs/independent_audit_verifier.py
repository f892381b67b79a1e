#!/usr/bin/env python3
"""A minimal, independent verifier of the notary's audit log, written from docs/AUDIT.md alone.

It imports nothing from the gateway: only the Python standard library and ``cryptography`` (Ed25519). It
checks what an auditor needs before anything else: that the log directory's entries reproduce the root of a
checkpoint signed by the notary's key.

    python docs/independent_audit_verifier.py LOG_DIR --vkey VKEY_OR_FILE [--checkpoint FILE]

1. parse the verifier key ``<name>+<8 hex key id>+<base64(0x01 || 32-byte Ed25519 key)>`` and check that
   the key id is ``SHA-256(name || 0x0A || 0x01 || key)[:4]`` (AUDIT.md section 4);
2. parse the signed note (``LOG_DIR/checkpoint`` unless ``--checkpoint``): text up to the last blank line,
   then ``— <name> <base64(key id || signature)>`` lines; every line by our key must verify over the text,
   and at least one must;
3. parse the checkpoint text ``<origin>\\n<size>\\n<base64 root>\\n`` (AUDIT.md section 5), origin = key name;
4. read the entry bundles ``tile/entries/<N>[.p/<W>]`` for the first ``size`` entries (AUDIT.md section 3;
   a partial bundle superseded by its full one may be gone: the full one's prefix is read), hash each
   entry as an RFC 6962 leaf and fold them into the Merkle tree head (section 2);
5. compare with the signed root. Prints ``OK ...`` (exit 0) or ``FAIL: <why>`` (exit 1).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
TILE = 256


class Failure(Exception):
    """Verification failed; the message says why."""


def b64(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Failure(f"not base64: {text[:20]!r}") from exc
    if base64.b64encode(raw).decode() != text:
        raise Failure("base64 is not canonical")
    return raw


def parse_vkey(vkey: str) -> tuple[str, int, Ed25519PublicKey]:
    name, key_id_hex, encoded = vkey.strip().split("+", 2)
    raw = b64(encoded)
    if len(raw) != 33 or raw[0] != 0x01:
        raise Failure("the vkey is not an Ed25519 (type 0x01) note key")
    expected = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if expected.hex() != key_id_hex:
        raise Failure("the vkey's key id does not match its key")
    return name, int(key_id_hex, 16), Ed25519PublicKey.from_public_bytes(raw[1:])


def verify_note(note: bytes, name: str, key_id: int, key: Ed25519PublicKey) -> str:
    message = note.decode("utf-8")
    split = message.rfind("\n\n")
    if split < 0 or not message.endswith("\n"):
        raise Failure("not a signed note")
    text, lines = message[: split + 1], message[split + 2 : -1].split("\n")
    verified = 0
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise Failure("malformed signature line")
        signer, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = b64(encoded)
        if signer != name or int.from_bytes(raw[:4], "big") != key_id:
            continue  # another key (a cosigner): not ours to check here
        try:
            key.verify(raw[4:], text.encode("utf-8"))
        except InvalidSignature as exc:
            raise Failure("the notary's signature does not verify") from exc
        verified += 1
    if not verified:
        raise Failure("the note carries no signature by the notary's key")
    return text


def parse_checkpoint(text: str, origin: str) -> tuple[int, bytes]:
    lines = text[:-1].split("\n")
    if len(lines) < 3 or lines[0] != origin:
        raise Failure(f"not a checkpoint of {origin}")
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise Failure("malformed tree size")
    root = b64(lines[2])
    if len(root) != 32:
        raise Failure("the root is not 32 bytes")
    return int(lines[1]), root


def tile_index(n: int) -> str:
    """1234067 -> x001/x234/067."""
    groups = []
    while True:
        n, group = divmod(n, 1000)
        groups.append(f"{group:03d}")
        if n == 0:
            break
    groups.reverse()
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def entries(log_dir: Path, size: int) -> Iterator[bytes]:
    for n in range((size + TILE - 1) // TILE):
        width = min(TILE, size - n * TILE)
        full = log_dir / "tile" / "entries" / tile_index(n)
        path = full if width == TILE else full.with_name(f"{full.name}.p") / str(width)
        if not path.is_file() and full.is_file():
            path = full  # a partial bundle may be deleted once full (tlog-tiles): use the full one's prefix
        if not path.is_file():
            raise Failure(f"missing entry bundle {path}")
        data, offset, count = path.read_bytes(), 0, 0
        while offset < len(data) and count < width:
            length = int.from_bytes(data[offset : offset + 2], "big")
            entry = data[offset + 2 : offset + 2 + length]
            if len(entry) != length:
                raise Failure(f"truncated entry in {path}")
            offset += 2 + length
            count += 1
            yield entry
        if count != width or (path != full and offset != len(data)):
            raise Failure(f"{path} does not hold {width} entries")


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """RFC 6962 MTH, folding perfect subtrees (a stack of (height, hash)) as leaves arrive."""
    stack: list[tuple[int, bytes]] = []
    for entry in leaves:
        node = (0, hashlib.sha256(b"\x00" + entry).digest())
        while stack and stack[-1][0] == node[0]:
            height, left = stack.pop()
            node = (height + 1, hashlib.sha256(b"\x01" + left + node[1]).digest())
        stack.append(node)
    if not stack:
        return hashlib.sha256(b"").digest()
    root = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        root = hashlib.sha256(b"\x01" + left + root).digest()
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--vkey", required=True, help="the notary's vkey, or a file holding it")
    parser.add_argument("--checkpoint", type=Path, help="signed checkpoint (default LOG_DIR/checkpoint)")
    args = parser.parse_args(argv)
    try:
        vkey = args.vkey
        if "+" not in vkey and Path(vkey).is_file():
            vkey = Path(vkey).read_text(encoding="utf-8")
        name, key_id, key = parse_vkey(vkey)
        note = (args.checkpoint or args.log_dir / "checkpoint").read_bytes()
        size, signed_root = parse_checkpoint(verify_note(note, name, key_id, key), name)
        root = merkle_root(entries(args.log_dir, size))
        if root != signed_root:
            raise Failure(f"the log's first {size} entries do not reproduce the signed root")
    except (Failure, OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"FAIL: {exc}")
        return 1
    print(f"OK {name} size {size} root {base64.b64encode(root).decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
