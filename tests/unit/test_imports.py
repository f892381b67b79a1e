"""The direction of imports between the layers (docs/ARCHITECTURE.md, "Layers"), checked on the source.

Every ``import`` statement counts, also those inside functions (a lazy import is still a dependency). The
rules, lowest layer first:

* ``gateway.errors`` and ``gateway.settings`` depend on nothing else in the project;
* ``gateway.contract`` (the message contract) imports neither the bus, the runtime, the audit log, deployment,
  the CLI nor the sandbox, and no Kafka or HTTP library;
* ``gateway.bus`` does not import the runtime (nor anything above it);
* ``gateway.coordination`` (timeline, SOP, statistics) sits between the bus and the runtime: it imports
  neither the runtime nor anything above it, and no Kafka or HTTP library (it publishes through a callable);
* ``gateway.runtime`` does not import the audit log, deployment, the CLI or the sandbox;
* the offline auditor (everything in ``gateway.audit`` but the notary and cosigner services and the Kafka
  record reader) imports no Kafka or HTTP code, so an auditor can run it on a copy of the log alone;
* ``gateway.deploy`` renders files: no bus, runtime, audit, CLI or sandbox, no Kafka or HTTP library;
* nothing in ``gateway`` imports ``adapters`` (adapters plug in through entry points);
* no module imports a private module (``_name``) of a package it is not part of.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import REPO

NETWORK_LIBRARIES = ("aiokafka", "aiohttp")
#: gateway.audit modules that are services (consume Kafka, serve HTTP) rather than the offline auditor.
AUDIT_SERVICES = ("gateway.audit.notary", "gateway.audit.cosigner", "gateway.audit.kafka_records")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> list[tuple[str, Path]]:
    root = REPO / package
    return sorted((_module_name(path), path) for path in root.rglob("*.py"))


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every module ``module`` imports (absolute names; relative imports resolved; ``from x import y`` gives
    ``x`` and ``x.y``, since ``y`` may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


ALL = _modules("gateway") + _modules("adapters")


def _violations(
    importer_prefix: str, forbidden: tuple[str, ...], *, exempt: tuple[str, ...] = ()
) -> list[str]:
    found = []
    for module, path in ALL:
        if not _within(module, importer_prefix) or any(_within(module, e) for e in exempt):
            continue
        for target in _imports(module, path):
            if any(_within(target, f) for f in forbidden):
                found.append(f"{module} imports {target}")
    return sorted(set(found))


UPPER = (
    "gateway.bus",
    "gateway.coordination",
    "gateway.runtime",
    "gateway.audit",
    "gateway.deploy",
    "gateway.cli",
    "gateway.sandbox",
)


@pytest.mark.parametrize(
    ("layer", "forbidden", "exempt"),
    [
        pytest.param("gateway.errors", ("gateway.", "adapters"), (), id="errors"),
        pytest.param(
            "gateway.settings",
            ("gateway.contract", *UPPER, "adapters", *NETWORK_LIBRARIES),
            (),
            id="settings",
        ),
        pytest.param("gateway.contract", (*UPPER, "adapters", *NETWORK_LIBRARIES), (), id="contract"),
        pytest.param("gateway.bus", (*UPPER[1:], "adapters"), (), id="bus"),
        pytest.param(
            "gateway.coordination",
            (*UPPER[2:], "adapters", "aiokafka", "aiohttp"),
            (),
            id="coordination",
        ),
        pytest.param(
            "gateway.runtime",
            ("gateway.audit", "gateway.deploy", "gateway.cli", "gateway.sandbox", "adapters"),
            (),
            id="runtime",
        ),
        pytest.param(
            "gateway.audit",
            (
                "gateway.bus",
                "gateway.runtime",
                "gateway.cli",
                "gateway.sandbox",
                "adapters",
                *NETWORK_LIBRARIES,
                *AUDIT_SERVICES,
            ),
            AUDIT_SERVICES,
            id="offline-auditor",
        ),
        pytest.param(
            "gateway.audit",
            ("gateway.cli", "gateway.sandbox", "gateway.deploy", "adapters"),
            (),
            id="audit-services",
        ),
        pytest.param(
            "gateway.deploy",
            (
                "gateway.bus",
                "gateway.runtime",
                "gateway.audit",
                "gateway.cli",
                "gateway.sandbox",
                "adapters",
                *NETWORK_LIBRARIES,
            ),
            (),
            id="deploy",
        ),
        pytest.param("gateway.sandbox", ("gateway.cli", "adapters"), (), id="sandbox"),
        pytest.param("gateway", ("adapters",), (), id="gateway-never-imports-adapters"),
    ],
)
def test_imports_point_down(layer: str, forbidden: tuple[str, ...], exempt: tuple[str, ...]) -> None:
    assert _violations(layer, forbidden, exempt=exempt) == []


def test_no_module_imports_another_packages_private_module() -> None:
    found = []
    for module, path in ALL:
        for target in _imports(module, path):
            parts = target.split(".")
            if parts[0] not in ("gateway", "adapters"):
                continue
            for index, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:index])  # the package the private module belongs to
                    if owner and not _within(module, owner):
                        found.append(f"{module} imports {target}")
                    break
    assert sorted(set(found)) == []


def test_the_rules_see_a_planted_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import written into a contract module is found (also when lazy)."""
    source = "def f():\n    from gateway.runtime.gateway import Gateway\n    return Gateway\n"
    planted = tmp_path / "planted.py"
    planted.write_text(source, encoding="utf-8")
    targets = list(_imports("gateway.contract.planted", planted))
    assert "gateway.runtime.gateway" in targets
    assert any(_within(t, "gateway.runtime") for t in targets)
    relative = tmp_path / "relative.py"
    relative.write_text("from ..bus import outbox\n", encoding="utf-8")
    assert "gateway.bus.outbox" in list(_imports("gateway.contract.relative", relative))
