"""Which registry version is in force: trust on first configuration, then a threshold-signed hash chain.

The rules are TUF's for its root role (theupdateframework.io specification, "update the root role"), with
X-Road's anchor as the starting point; ``docs/REGISTRY.md`` explains them and THREAT_MODEL.md names the
attacks they stop. A :class:`RegistryChain` starts from an :class:`Anchor` given in configuration (the
digest of a version, the maintainer keys and threshold, or both) and is offered versions one at a time
(:meth:`RegistryChain.update`, a pure function of the anchor and the sequence of offered bytes):

1. the first version trusted must match the anchor: its digest (``registry.anchor-mismatch``) and/or a
   threshold of the anchor's maintainer keys (``registry.threshold-not-met``), and a threshold of its own;
2. afterwards, a version whose digest is the one in force changes nothing (a re-publication);
3. a serial not above the one in force is ``registry.rollback`` (an old version replayed, or another
   version with the same serial);
4. the next version must say ``previous`` = the digest in force and ``serial`` = that serial + 1
   (``registry.chain-broken``): no version is skipped, none is forked;
5. it must carry valid signatures by a threshold of the maintainers *in force* (so a rogue maintainer, or
   fewer than the threshold, cannot change the trust root) and by a threshold of its *own* maintainers (so
   a new maintainer set is one its members accept) — ``registry.threshold-not-met`` otherwise.

Expiry is deliberately not a reason to refuse: a gateway catching up reads expired intermediate versions
(TUF checks only the final one). A version in force past its ``expires`` is *stale* — a freeze attack or
maintainers who forgot — and the runtime reports it (``registry.expired`` on ``/readyz``, a metric) while
verification continues with the last good version. Mix-and-match (parties of one version with keys of
another) cannot be expressed: parties, keys, permissions and maintainers are one signed document.

Every outcome is a value (:class:`Outcome`): the runtime counts refusals by reason, the notary logs them in
its leaves, and the auditor recomputes them identically.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from gateway.contract.registry_version import Maintainers, RegistryVersion
from gateway.errors import GatewayError, Reason
from gateway.settings import Table

__all__ = ["ANCHOR_FORMAT", "Anchor", "Outcome", "RegistryChain"]

ANCHOR_FORMAT: Final = "xchg-registry-anchor/1"
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")

Status = Literal["applied", "in-force", "refused"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    """What configuration trusts before any version (X-Road's anchor file): a digest, maintainers, or both."""

    digest: str | None = None
    maintainers: Maintainers | None = None

    def __post_init__(self) -> None:
        if self.digest is None and self.maintainers is None:
            raise GatewayError(Reason.CONFIG_INVALID, "registry anchor: a digest or maintainer keys required")

    @classmethod
    def load(cls, path: Path) -> Anchor:
        """An anchor file (``gateway registry anchor`` writes one); errors are ``config.invalid``."""
        return cls.from_table(Table.load(path, what="registry anchor"))

    @classmethod
    def from_table(cls, table: Table) -> Anchor:
        if table.raw("format") != ANCHOR_FORMAT:
            raise table.fail("format", f"must be {ANCHOR_FORMAT!r}")
        digest = table.string("digest", None)
        if digest is not None and not _DIGEST.fullmatch(digest):
            raise table.fail("digest", "must be sha256:<64 lowercase hex digits>")
        maintainers = None
        if "maintainers" in table:
            inner = table.table("maintainers")
            try:
                maintainers = Maintainers.from_table(
                    Table(_raw(inner), where=inner.where, reason=Reason.CONFIG_INVALID)
                )
            except GatewayError as exc:
                raise GatewayError(Reason.CONFIG_INVALID, exc.detail) from exc
        table.refuse_unknown()
        if digest is None and maintainers is None:
            raise table.fail("", "an anchor names a digest, maintainer keys, or both")
        return cls(digest=digest, maintainers=maintainers)

    @classmethod
    def of(cls, version: RegistryVersion, *, digest: bool = True, maintainers: bool = True) -> Anchor:
        """The anchor that trusts ``version`` (its digest and/or its maintainers)."""
        return cls(
            digest=version.digest if digest else None,
            maintainers=version.maintainers if maintainers else None,
        )

    def to_json(self) -> dict[str, object]:
        """The anchor as a JSON value (:meth:`from_json` reads it back): to hand to worker processes."""
        return {
            "format": ANCHOR_FORMAT,
            "digest": self.digest,
            "maintainers": None if self.maintainers is None else self.maintainers.to_json(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> Anchor:
        document = {k: v for k, v in value.items() if v is not None}
        return cls.from_table(Table(document, reason=Reason.CONFIG_INVALID))

    def to_toml(self) -> str:
        """The anchor file's text (read back by :meth:`load`)."""
        lines = [
            "# Registry trust anchor (docs/REGISTRY.md): the first registry version a gateway trusts.",
            "# Distribute it out of band, like the keys; it changes only if the maintainers lose the chain.",
            f'format = "{ANCHOR_FORMAT}"',
        ]
        if self.digest is not None:
            lines.append(f'digest = "{self.digest}"')
        if self.maintainers is not None:
            lines += ["", "[maintainers]", f"threshold = {self.maintainers.threshold}"]
            for key in self.maintainers.keys:
                lines += [
                    "",
                    "[[maintainers.keys]]",
                    f'kid = "{key.kid}"',
                    f"name = {_toml_string(key.name)}",
                    f'alg = "{key.public_key.alg}"',
                    f'public_key = "{base64.b64encode(key.public_key.raw).decode("ascii")}"',
                ]
        return "\n".join(lines) + "\n"

    def admit(self, version: RegistryVersion) -> tuple[str, ...]:
        """Raise unless ``version`` is the anchored one; returns its (own) maintainers who signed it."""
        if self.digest is not None and version.digest != self.digest:
            raise GatewayError(
                Reason.REGISTRY_ANCHOR_MISMATCH,
                f"{version.label()} is not the anchored version {self.digest[:15]}...",
            )
        if self.maintainers is not None:
            self.maintainers.require(version.payload, version.signatures, "the anchor")
        return version.maintainers.require(version.payload, version.signatures, f"serial {version.serial}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What offering one version to a chain did: ``applied`` (now in force), ``in-force`` (it already was)
    or ``refused`` with a reason. ``version`` is None when the bytes are not a well-formed version;
    ``signers`` are the maintainers (of the version in force before, or of the anchor) who signed it."""

    status: Status
    version: RegistryVersion | None = None
    reason: Reason | None = None
    detail: str = ""
    signers: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status != "refused"


class RegistryChain:
    """The version in force, starting from an anchor. Offer versions in order with :meth:`update`."""

    __slots__ = ("_current", "anchor")

    def __init__(self, anchor: Anchor) -> None:
        self.anchor = anchor
        self._current: RegistryVersion | None = None

    @classmethod
    def resume(cls, anchor: Anchor, current: RegistryVersion | None) -> RegistryChain:
        """A chain whose version in force is ``current``, already verified from ``anchor`` (by whoever
        kept it: a gateway's own copy, an auditor replaying the log)."""
        chain = cls(anchor)
        chain._current = current
        return chain

    def copy(self) -> RegistryChain:
        """An independent chain in the same state (to try a batch and keep it only if it is committed)."""
        return RegistryChain.resume(self.anchor, self._current)

    @property
    def current(self) -> RegistryVersion | None:
        """The version in force (None before the anchored one arrived). Replaced in one assignment."""
        return self._current

    def update(self, raw: bytes) -> Outcome:
        """Offer the bytes of a version; see the module docstring for the rules, in their order."""
        try:
            version = RegistryVersion.parse(raw)
        except GatewayError as exc:
            return Outcome(status="refused", reason=exc.reason, detail=exc.detail)
        return self.offer(version)

    def offer(self, version: RegistryVersion) -> Outcome:
        """:meth:`update` for a version already parsed."""
        current = self._current
        try:
            if current is None:
                signers = self.anchor.admit(version)
            else:
                if version.digest == current.digest:
                    signed = version.signers(current.maintainers)
                    return Outcome(status="in-force", version=version, signers=signed)
                signers = _follows(current, version)
        except GatewayError as exc:
            return Outcome(status="refused", version=version, reason=exc.reason, detail=exc.detail)
        self._current = version
        return Outcome(status="applied", version=version, signers=signers)


def _follows(current: RegistryVersion, version: RegistryVersion) -> tuple[str, ...]:
    """Raise unless ``version`` is the next link after ``current`` (rules 3-5); returns the signers."""
    if version.serial <= current.serial:
        raise GatewayError(
            Reason.REGISTRY_ROLLBACK,
            f"{version.label()} is not newer than serial {current.serial} in force",
        )
    if version.previous != current.digest or version.serial != current.serial + 1:
        expected = f"serial {current.serial + 1} with previous {current.digest[:15]}..."
        found = f"serial {version.serial} with previous {(version.previous or 'null')[:15]}..."
        raise GatewayError(
            Reason.REGISTRY_CHAIN_BROKEN,
            f"{found} does not follow serial {current.serial}: expected {expected}",
        )
    signers = current.maintainers.require(version.payload, version.signatures, f"serial {current.serial}")
    version.maintainers.require(version.payload, version.signatures, f"serial {version.serial}")
    return signers


def _raw(table: Table) -> dict[str, object]:
    """The mapping behind ``table`` (every key marked used: a nested reader checks them)."""
    table.mark_used(*table.keys())
    return {key: table.raw(key) for key in table}


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are a subset of TOML's."""
    return json.dumps(text, ensure_ascii=False)
