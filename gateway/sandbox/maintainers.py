"""Registry maintainers for trials, the demo and tests: fresh maintainer keys, signed registry versions.

In production each maintainer (Kemensos, Kemlu, an independent party) holds one key on their own machine and
signs with ``gateway registry sign``; here all of them are generated in one place so a sandbox deployment
can start from a signed version 1 (``docs/REGISTRY.md``). Nothing private is committed anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.contract.keys import SigningKey, write_private_pem
from gateway.contract.registry_version import MaintainerKey, Maintainers, RegistryVersion

__all__ = ["MAINTAINER_NAMES", "SandboxMaintainer", "maintainer_set", "new_maintainers", "signed_version"]

#: The sample maintainer set: the two ministries and an independent party, two of three must sign.
MAINTAINER_NAMES: Final = ("kemensos", "kemlu", "independent")


@dataclass(frozen=True, slots=True)
class SandboxMaintainer:
    """One maintainer: a key id, a display name and the private key."""

    kid: str
    name: str
    key: SigningKey

    def public(self) -> MaintainerKey:
        return MaintainerKey(kid=self.kid, name=self.name, public_key=self.key.public_key)

    def write(self, directory: Path) -> Path:
        """The private key as ``<kid>.pem`` (0600) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"{self.kid}.pem"
        write_private_pem(path, self.key.to_pem())
        return path


def new_maintainers(names: Iterable[str] = MAINTAINER_NAMES) -> list[SandboxMaintainer]:
    """Fresh Ed25519 maintainer keys, key ids ``registry-<name>-<8 hex of the public key>``."""
    result = []
    for name in names:
        key = SigningKey.generate()
        kid = f"registry-{name}-{hashlib.sha256(key.public_key.raw).hexdigest()[:8]}"
        result.append(SandboxMaintainer(kid=kid, name=name, key=key))
    return result


def maintainer_set(maintainers: Sequence[SandboxMaintainer], threshold: int) -> Maintainers:
    return Maintainers(threshold=threshold, keys=tuple(m.public() for m in maintainers))


def signed_version(document: Mapping[str, Any], signers: Iterable[SandboxMaintainer]) -> RegistryVersion:
    """``document`` as a version signed by each of ``signers``."""
    version = RegistryVersion.from_document(document)
    for signer in signers:
        version = version.signed(signer.kid, signer.key)
    return version
