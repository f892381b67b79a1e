"""The cosigner service: any party runs one to cosign the notary's checkpoints (c2sp.org/tlog-cosignature).

Why: a notary that shows auditors one history and an agency another (a split view) cannot be caught by
either alone. A cosigner remembers (durably) the last checkpoint it cosigned and cosigns a new one only if
the notary proves it extends that one; an auditor requiring k of n agencies' cosignatures
(:func:`gateway.audit.witness.verify_cosigned`) then trusts no single operator.

Design (pull over HTTP, the simplest one that stays correct when anything fails):

1. ``GET <notary>/checkpoint`` — the latest checkpoint note;
2. ``GET <notary>/consistency?from=<last cosigned size>&to=<its size>`` — the RFC 6962 proof;
3. :meth:`gateway.audit.witness.Witness.add_checkpoint` verifies the notary's signature, the origin, the
   proof from the cosigner's *own* record (never from anything the notary says it was), refuses a fork
   (``cosign.fork``, ``proof.consistency-failed``, or ``proof.out-of-range`` when the tree shrank), and
   records the new checkpoint durably *before* the cosignature exists;
4. ``POST <notary>/cosignature`` with the checkpoint note plus the new cosignature line; the notary checks it
   against its configured cosigner keys and serves (and republishes to Kafka) the cosigned note.

Why not consume ``xchg.notary.checkpoints.v1`` instead: only the notary may read that topic (the rendered
ACLs), the proof must come from the notary anyway, and polling the latest checkpoint skips nothing that
matters — cosigning the latest with a proof from the last cosigned one covers every checkpoint between.
Why not the tlog-witness push (the notary calling each cosigner): agencies would have to expose an inbound
endpoint to the notary; here only the notary listens. Every step is idempotent, so a failure anywhere is
retried at the next poll; a refusal is logged as ``cosign.refused`` (an alert: the notary forked or rolled
back) and the cosigner keeps its record, so it never cosigns the forked history later either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.note import MAX_NOTE_SIZE, CosignatureV1Signer, Note, decode_base64, verifier_from_vkey
from gateway.audit.witness import MAX_CONSISTENCY_PROOF, Witness
from gateway.contract.keys import SigningKey
from gateway.errors import GatewayError, Reason
from gateway.settings import Table, read_passphrase

__all__ = ["CosignOutcome", "CosignerConfig", "CosignerService"]

_log = structlog.get_logger(__name__)

_MAX_PROOF_BYTES: Final = 64 * (MAX_CONSISTENCY_PROOF + 1)
_KEYS: Final = (
    "name", "key_file", "passphrase_file", "state_file", "notary_url", "notary_vkeys", "interval_seconds",
    "timeout_seconds",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class CosignerConfig:
    """``gateway audit cosign --config FILE`` (TOML; relative paths against the file's folder)::

    name = "kemensos.cosigner"          # the cosigner's key name (in its vkey)
    key_file = "keys/cosigner.pem"      # Ed25519 PKCS#8 (gateway audit keygen --cosigner NAME)
    state_file = "state/cosigner.json"  # the last cosigned checkpoint per log (keep it: it is the memory)
    notary_url = "http://notary:8090"
    notary_vkeys = ["id.trafficking.xchg/notary/prod+...+..."]
    interval_seconds = 10
    # passphrase_file = "..."            # of key_file, if it is encrypted
    # timeout_seconds = 10               # per request to the notary

    Read with :class:`gateway.settings.Table`: every key typed, an unknown key an error naming it.
    """

    name: str
    key_file: Path
    state_file: Path
    notary_url: str
    notary_vkeys: tuple[str, ...]
    passphrase_file: Path | None = None
    interval_seconds: float = 10.0
    timeout_seconds: float = 10.0

    @classmethod
    def load(cls, path: Path) -> CosignerConfig:
        return cls.from_table(Table.load(path))

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], *, base_dir: Path) -> CosignerConfig:
        return cls.from_table(Table(document, base_dir=base_dir))

    @classmethod
    def from_table(cls, doc: Table) -> CosignerConfig:
        """Every key checked (type, bounds); an unknown key is an error naming it."""
        doc.only(*_KEYS)
        if "notary_vkeys" not in doc:
            raise doc.fail("notary_vkeys", "a list of the notary's vkeys is required")
        vkeys = doc.strings("notary_vkeys", empty=False)
        for vkey in vkeys:
            verifier_from_vkey(vkey)
        return cls(
            name=doc.string("name"),
            key_file=doc.path("key_file"),
            state_file=doc.path("state_file"),
            notary_url=doc.string("notary_url").rstrip("/"),
            notary_vkeys=vkeys,
            passphrase_file=doc.path("passphrase_file", None),
            interval_seconds=doc.number("interval_seconds", 10.0, positive=True),
            timeout_seconds=doc.number("timeout_seconds", 10.0, positive=True),
        )


@dataclass(frozen=True, slots=True)
class CosignOutcome:
    """What one poll did: cosigned ``size``, found nothing new, or refused (``reason`` says why)."""

    size: int
    cosigned: bool
    reason: Reason | None = None
    detail: str = ""


class CosignerService:
    """Polls one notary and cosigns what extends the last checkpoint it cosigned (see the module docstring).

    ``origin`` is the notary's log origin; ``cosigner`` must be configured with that origin's keys.
    """

    def __init__(
        self,
        cosigner: Witness,
        *,
        origin: str,
        notary_url: str,
        timeout: float = 10.0,
    ) -> None:
        self.cosigner = cosigner
        self.origin = origin
        self.url = notary_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.refusals = 0

    @classmethod
    def from_config(cls, config: CosignerConfig) -> CosignerService:
        passphrase = read_passphrase(config.passphrase_file, "passphrase_file")
        signer = CosignatureV1Signer(config.name, SigningKey.load(config.key_file, passphrase))
        verifiers = [verifier_from_vkey(v) for v in config.notary_vkeys]
        origins = {v.name for v in verifiers}
        if len(origins) != 1:
            raise GatewayError(Reason.CONFIG_INVALID, "notary_vkeys: all keys must name the same log origin")
        origin = origins.pop()
        cosigner = Witness(signer, {origin: verifiers}, state_file=config.state_file)
        return cls(cosigner, origin=origin, notary_url=config.notary_url, timeout=config.timeout_seconds)

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _get(self, path: str, limit: int) -> bytes:
        session = await self._http()
        try:
            async with session.get(self.url + path) as response:
                body = await response.content.read(limit + 1)
                if response.status != 200:
                    raise GatewayError(Reason.BUS_UNAVAILABLE, f"notary answered {response.status} to {path}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayError(Reason.BUS_UNAVAILABLE, f"notary unreachable ({type(exc).__name__})") from exc
        if len(body) > limit:
            raise GatewayError(Reason.SIZE_EXCEEDED, f"notary answer to {path} is too large")
        return body

    async def poll_once(self) -> CosignOutcome:
        """Fetch the latest checkpoint and cosign it if it extends ours; network trouble raises
        ``GatewayError(BUS_UNAVAILABLE)``, a refusal is returned (and logged as an alert)."""
        note = await self._get("/checkpoint", MAX_NOTE_SIZE)
        try:
            checkpoint = Checkpoint.parse(Note.parse(note).text)  # not trusted yet: add_checkpoint verifies
        except GatewayError as exc:
            return self._refused(0, exc)
        old = self.cosigner.latest_size(self.origin)
        latest = self.cosigner.latest(self.origin)
        same = latest is not None and (latest.size, latest.root_hash) == (
            checkpoint.size,
            checkpoint.root_hash,
        )
        if same and any(s.name == self.cosigner.name for s in Note.parse(note).signatures):
            return CosignOutcome(checkpoint.size, cosigned=False, detail="already cosigned")
        proof: list[bytes] = []
        if 0 < old < checkpoint.size:
            body = await self._get(f"/consistency?from={old}&to={checkpoint.size}", _MAX_PROOF_BYTES)
            try:
                proof = _parse_proof(body)
            except GatewayError as exc:
                return self._refused(checkpoint.size, exc)
        try:
            line = self.cosigner.add_checkpoint(note, old_size=old, proof=proof)
        except GatewayError as exc:
            return self._refused(checkpoint.size, exc)
        await self._post(note + line.encode("utf-8"))
        _log.info("cosign.cosigned", origin=self.origin, size=checkpoint.size, previous=old)
        return CosignOutcome(checkpoint.size, cosigned=True)

    def _refused(self, size: int, exc: GatewayError) -> CosignOutcome:
        self.refusals += 1
        _log.error("cosign.refused", origin=self.origin, size=size, reason=str(exc.reason), detail=exc.detail)
        return CosignOutcome(size, cosigned=False, reason=exc.reason, detail=exc.detail)

    async def _post(self, cosigned: bytes) -> None:
        session = await self._http()
        try:
            async with session.post(self.url + "/cosignature", data=cosigned) as response:
                if response.status != 200:
                    text = (await response.content.read(2048)).decode("utf-8", "replace")
                    raise GatewayError(
                        Reason.BUS_UNAVAILABLE, f"notary refused the cosignature ({response.status}): {text}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayError(Reason.BUS_UNAVAILABLE, f"notary unreachable ({type(exc).__name__})") from exc

    async def run(self, stop: asyncio.Event, interval: float = 10.0) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; failures are logged and retried."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except GatewayError as exc:
                _log.warning(
                    "cosign.poll_failed", origin=self.origin, reason=str(exc.reason), detail=exc.detail
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _parse_proof(body: bytes) -> list[bytes]:
    proof: list[bytes] = []
    for line in body.decode("ascii", "replace").splitlines():
        value = decode_base64(line)
        if value is None or len(value) != 32:
            raise GatewayError(Reason.PROOF_MALFORMED, "consistency proof line is not a base64 SHA-256 hash")
        proof.append(value)
    if len(proof) > MAX_CONSISTENCY_PROOF:
        raise GatewayError(Reason.PROOF_MALFORMED, "consistency proof too long")
    return proof
