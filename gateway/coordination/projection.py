"""Events -> timeline entries: which stage of a case an event marks, when, where and by whom. Pure, no I/O.

The timeline keeps identifiers only: case and alert ids, party ids, facility ids, codes and times, plus the
few clear fields the SOP reads (``facts``). Never a name, a contact, a health note or free text: sealed
properties are dropped before anything is looked at, and facts are scalars from the clear payload.

The optional *statistical profile* of a case (age band, sex, citizenship, exploitation type and country,
year) is coarse, pseudonymous personal data derived from a referral as far as this party may read it; it is
kept only when configured (``statistics.profiles``), deleted on an erasure request, and never leaves the
gateway except as suppressed aggregates (docs/PRIVACY.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

from gateway.coordination.sop import fact

__all__ = [
    "AGE_BANDS",
    "RANKS",
    "STAGES",
    "Profile",
    "TimelineEntry",
    "age_band",
    "instant",
    "project",
]

_TYPE_PREFIX: Final = "id.trafficking."
#: message -> (stage, business-time field or None for the event time, party field, place field, code field)
STAGES: Final[Mapping[str, tuple[str, str | None, str | None, str | None, str | None]]] = {
    "case.referral": ("referral", None, "cas_ReferredOrganisation", "current_location_id", "priority"),
    "case.referral-response": ("response", None, "referral_event.source", "assigned_location_id", "status"),
    "case.repatriation-plan": ("repatriation-plan", None, "escort_party", "arrival_point", "plan_status"),
    "case.shelter-admission": ("shelter-admission", "admitted_at", None, "shelter_id", "admission_type"),
    "case.assistance-record": (
        "assistance",
        "provided_on",
        "provider_party",
        "location_id",
        "assistance_type",
    ),
    "case.support-plan": ("support-plan", None, "provider_party", None, "spl_Type"),
    "case.shelter-discharge": (
        "discharge",
        "discharged_at",
        "destination_party",
        "shelter_id",
        "discharge_destination",
    ),
    "case.closure": ("closure", "closed_on", "referred_to_party", None, "closure_reason_code"),
    "case.consent-change": ("consent-change", "effective_at", None, None, "change"),
    "alert.group-arrival": (
        "group-arrival",
        "expected_date",
        "coordinating_party",
        "arrival_point",
        "alert_status",
    ),
    "alert.shelter-capacity": ("capacity", "as_of", "operator_party", "shelter_id", None),
    "alert.data-incident": ("data-incident", "detected_at", None, None, "status"),
}
#: Order of the case stages; an event of a lower stage timed after a higher one is reported, not refused.
RANKS: Final[Mapping[str, int]] = {
    "referral": 1,
    "response": 2,
    "repatriation-plan": 3,
    "arrival": 4,
    "shelter-admission": 5,
    "discharge": 7,
    "closure": 8,
}
#: Age bands (years) after the CTDC's published age groups; the last is open-ended.
AGE_BANDS: Final = ((0, 8), (9, 17), (18, 20), (21, 23), (24, 26), (27, 29), (30, 38), (39, 47), (48, 200))
_BEDS: Final = ("capacity_beds", "occupied_beds", "available_beds")
_SEX: Final = {
    "Feminine": "Feminine",
    "Masculine": "Masculine",
    "TransgenderFeminine": "Other",
    "TransgenderMasculine": "Other",
    "NonConforming": "Other",
}


@dataclass(frozen=True, slots=True)
class Profile:
    """Coarse statistical dimensions of one case (see the module docstring)."""

    case_id: str
    year: int
    sex: str = "Unknown"
    age_band: str = "Unknown"
    citizenship: str = "Unknown"
    exploitation: str = "Unknown"
    exploitation_country: str = "Unknown"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    source: str
    event_id: str
    message: str
    """``case.referral``..."""
    kind: str
    """``case`` or ``alert``."""
    subject: str
    """The case id or alert id (the partition key)."""
    stage: str
    at: float
    """Business time (epoch seconds): the payload's own time where it has one, else the event time."""
    event_time: float
    party: str | None = None
    place: str | None = None
    code: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    erasure: bool = False
    profile: Profile | None = None

    @property
    def rank(self) -> int | None:
        return RANKS.get(self.stage)


def instant(value: Any) -> float | None:
    """Epoch seconds of an RFC 3339 date-time or a date (midnight UTC); None when not one."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC).timestamp()
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age_band(years: int | None) -> str:
    if years is None or years < 0:
        return "Unknown"
    for low, high in AGE_BANDS:
        if low <= years <= high:
            return f"{low}+" if high >= 200 else f"{low}-{high}"
    return "Unknown"


def project(
    *,
    event_type: str,
    source: str,
    event_id: str,
    subject: str,
    event_time: str,
    clear: Mapping[str, Any],
    payload: Mapping[str, Any] | None = None,
    fact_fields: Collection[str] = (),
    profiles: bool = False,
) -> TimelineEntry | None:
    """The timeline entry of one event, or None for types the timeline does not follow.

    ``clear`` is the clear payload (no sealed properties); ``payload`` is what this party may read of the
    whole payload (clear plus unsealed), used only for the optional statistical profile.
    """
    message = event_type.removeprefix(_TYPE_PREFIX)
    spec = STAGES.get(message)
    if spec is None:
        return None
    stage, time_field, party_field, place_field, code_field = spec
    seen = instant(event_time) or 0.0
    at = instant(fact(clear, time_field)) if time_field else None
    code = _text(fact(clear, code_field)) if code_field else None
    if message == "case.repatriation-plan" and code == "completed":
        stage = "arrival"
        at = instant(fact(clear, "planned_arrival_date"))
    facts = {name: value for name in fact_fields if _scalar(value := fact(clear, name))}
    if message == "alert.shelter-capacity":  # facility figures, for occupancy statistics
        facts.update({k: clear[k] for k in _BEDS if isinstance(clear.get(k), int)})
    profile = None
    if profiles and message == "case.referral" and payload is not None:
        profile = _profile(subject, payload, at or seen)
    return TimelineEntry(
        source=source,
        event_id=event_id,
        message=message,
        kind=message.split(".", 1)[0],
        subject=subject,
        stage=stage,
        at=at if at is not None else seen,
        event_time=seen,
        party=_text(fact(clear, party_field)) if party_field else None,
        place=_text(fact(clear, place_field)) if place_field else None,
        code=code,
        facts=facts,
        erasure=message == "case.consent-change" and clear.get("erasure_requested") is True,
        profile=profile,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or (
        isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())
    )


def _profile(case_id: str, payload: Mapping[str, Any], at: float) -> Profile:
    identity = payload.get("identity") if isinstance(payload.get("identity"), Mapping) else {}
    assert isinstance(identity, Mapping)  # noqa: S101 - narrowed above
    referral_day = datetime.fromtimestamp(at, UTC).date()
    years: int | None = None
    birth = identity.get("prs_Birthdate")
    if isinstance(birth, str):
        try:
            born = date.fromisoformat(birth)
            years = (
                referral_day.year
                - born.year
                - ((referral_day.month, referral_day.day) < (born.month, born.day))
            )
        except ValueError:
            years = None
    if years is None and isinstance(payload.get("vic_AgeWhenTrafficked"), int):
        years = int(payload["vic_AgeWhenTrafficked"])
    types = payload.get("vic_TypeOfExploitation")
    exploitation = "Unknown"
    if isinstance(types, list) and types:
        exploitation = str(types[0]) if len(types) == 1 else "Multiple"
    country = "Unknown"
    for item in payload.get("trafficking_events") or ():
        if isinstance(item, Mapping) and item.get("hte_Type") == "Exploitation" and item.get("hte_Country"):
            country = str(item["hte_Country"])
            break
    citizenship = identity.get("prs_Citizenship")
    return Profile(
        case_id=case_id,
        year=referral_day.year,
        sex=_SEX.get(str(identity.get("prs_Gender")), "Unknown"),
        age_band=age_band(years),
        citizenship=str(citizenship[0]) if isinstance(citizenship, list) and citizenship else "Unknown",
        exploitation=exploitation,
        exploitation_country=country,
    )
