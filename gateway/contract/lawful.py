"""The lawful-basis rule of a referral, applied by every producer (``build_event``) and every consumer.

A referral passes a person's personal data to another party. UU 27/2022 art. 20(1) requires a basis
for processing and art. 20(2) lists them: (a) explicit, lawful consent for a specific purpose, (b) a contract,
(c) a legal obligation, (d) the vital interests of the data subject, (e) a task in the public interest,
public service or official authority, (f) legitimate interests (docs/PRIVACY.md). The schema already makes
``consent`` and ``legal_basis`` required; this rule makes them agree:

* ``legal_basis = "consent"`` needs consent that covers this purpose: ``consent.con_Consent`` true, not
  ``withdrawn``, ``referral`` in ``consent.scope``;
* for a child (``child.is_minor``, visible to the publisher and to recipients after unsealing), consent must
  have been given by a parent or guardian (``given_by = "guardian"``; art. 25(2));
* any other ground of art. 20(2) may carry a referral without consent (an emergency: ``vital-interest``).

A referral that breaks it is refused with ``privacy.no-legal-basis``; the detail names the rule, never a
value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.errors import GatewayError, Reason

__all__ = ["REFERRAL", "check_lawful_basis"]

REFERRAL: Final = "id.trafficking.case.referral"


def check_lawful_basis(event_type: str, payload: Mapping[str, Any]) -> None:
    """Raise ``GatewayError(privacy.no-legal-basis)`` for a referral without a lawful basis (see above)."""
    if event_type != REFERRAL or payload.get("legal_basis") != "consent":
        return
    consent = payload.get("consent")
    if not isinstance(consent, Mapping):
        raise GatewayError(Reason.PRIVACY_NO_LEGAL_BASIS, "legal_basis is consent but no consent is recorded")
    if consent.get("con_Consent") is not True or consent.get("withdrawn") is True:
        raise GatewayError(
            Reason.PRIVACY_NO_LEGAL_BASIS,
            "legal_basis is consent but consent was refused or withdrawn; name another ground of "
            "UU 27/2022 art. 20(2) (e.g. vital-interest) or do not refer",
        )
    scope = consent.get("scope")
    if not isinstance(scope, list) or "referral" not in scope:
        raise GatewayError(
            Reason.PRIVACY_NO_LEGAL_BASIS,
            "legal_basis is consent but consent.scope does not cover 'referral'",
        )
    child = payload.get("child")
    if isinstance(child, Mapping) and child.get("is_minor") is True and consent.get("given_by") != "guardian":
        raise GatewayError(
            Reason.PRIVACY_NO_LEGAL_BASIS,
            "a child's referral on consent needs consent given by a parent or guardian (given_by = guardian)",
        )
