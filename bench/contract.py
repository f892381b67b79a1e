"""Cost per event of the message contract, against raw Ed25519 (PyNaCl) and JWS (joserfc) on the same bytes.

Run: ``.venv/bin/python -m bench.contract`` (full) or ``--quick`` (smoke size). Writes
``bench/results/contract.json``.

What is timed, per event, in one process (every case runs once per repetition, in rotating order, so a
noisy machine slows all of them alike; the figures are medians over the repetitions):

* gateway sign = :func:`gateway.contract.sign.build_event` (logical schema, authorisation, sealing, wire
  schema, RFC 8785 data bytes, CloudEvent, verification material, DSSE signature) of a ~1 KB payload;
* gateway verify = :meth:`gateway.contract.verify.EventVerifier.verify_kafka` of the Kafka record (size,
  strict parse, canonical check, CloudEvents profile, DSSE, key, signature, material, authorisation, wire
  schema; for the sealed referral also the recipient check, HPKE open and the logical schema);
* raw = ``nacl.signing`` sign and verify of the same ~1 KB canonical data bytes: the floor for any
  Ed25519-signed message in Python;
* JWS = ``joserfc.jws`` compact serialisation, ``alg: EdDSA``, sign and verify of the same bytes: what a
  Python team would otherwise reach for.

Two more sections: a cost breakdown of the gateway paths into their parts (each part timed alone), and
scaling: sign + ``to_kafka`` + verify streamed for 10,000 and for 1,000,000 events (per-event cost and
peak RSS of each run).
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import nacl.signing
import orjson
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ed25519
from joserfc import jws
from joserfc.jwk import OKPKey

from bench._common import (
    ALERT_TYPE,
    PUBLISHER,
    READER,
    REFERRAL_TYPE,
    Deployment,
    alert_payload,
    argument_parser,
    machine,
    median,
    print_table,
    referral_payload,
    self_peak_rss_mb,
    write_results,
)
from gateway.contract.canonical import canonical_json, parse_canonical
from gateway.contract.dsse import DsseEnvelope, check_signed_extensions, pae, verification_material
from gateway.contract.envelope import Envelope, KafkaRecord
from gateway.contract.policy import SIGNED_EXTENSIONS
from gateway.contract.schemas import default_schema_root
from gateway.contract.sign import build_event
from gateway.contract.verify import Accepted

NON_RECIPIENT: Final = "iom"  # may read KBRI Kuching's case topic, but the referral is not sealed for it

Case = Callable[[], None]


def _loop(operation: Callable[[Any], object], items: Sequence[Any]) -> Case:
    def run() -> None:
        for item in items:
            operation(item)

    return run


def _time_per_item(case: Case, count: int) -> float:
    """Microseconds per item of one run of ``case`` (which handles ``count`` items)."""
    start = time.perf_counter()
    case()
    return (time.perf_counter() - start) / count * 1e6


class Contract:
    """The deployment, payloads, pre-built records and the timed cases of one benchmark run."""

    def __init__(self, events: int) -> None:
        self.deployment = Deployment.build()
        self.events = events
        member = self.deployment.members[PUBLISHER]
        self.signer = member.signer
        self.alerts = [alert_payload(i) for i in range(events)]
        self.referrals = [referral_payload(i) for i in range(events)]
        self.reader = self.deployment.verifier(READER)
        self.bystander = self.deployment.verifier(NON_RECIPIENT)
        self.alert_records = [self.sign_alert(a).to_kafka() for a in self.alerts]
        self.referral_records = [self.sign_referral(r).to_kafka() for r in self.referrals]
        self.alert_bytes = canonical_json(self.alerts[0])
        self.referral_bytes = canonical_json(self.referrals[0])
        self.nacl_key = nacl.signing.SigningKey.generate()
        self.nacl_verify_key = self.nacl_key.verify_key
        self.jose_key = OKPKey.generate_key("Ed25519")
        self.check()

    def sign_alert(self, data: dict[str, Any]) -> Envelope:
        d = self.deployment
        return build_event(
            signer=self.signer, registry=d.registry, schemas=d.schemas, event_type=ALERT_TYPE, data=data
        )

    def sign_referral(self, data: dict[str, Any]) -> Envelope:
        d = self.deployment
        return build_event(
            signer=self.signer, registry=d.registry, schemas=d.schemas, event_type=REFERRAL_TYPE, data=data,
            recipients=(READER,),
        )  # fmt: skip

    def check(self) -> None:
        """Every case does what it claims (outside the timed loops)."""
        for verifier, records in ((self.reader, self.alert_records), (self.reader, self.referral_records),
                                  (self.bystander, self.referral_records)):  # fmt: skip
            for record in records[:3]:
                verdict = verifier.verify_kafka(record.value, record.headers, record.key)
                if not isinstance(verdict, Accepted):
                    raise SystemExit(f"benchmark set-up broken: {verdict}")
        opened = self.reader.verify_kafka(*self._args(self.referral_records[0]))
        if not (isinstance(opened, Accepted) and opened.unsealed and "identity" in opened.unsealed):
            raise SystemExit("benchmark set-up broken: the recipient did not open the sealed fields")
        signature = self.nacl_key.sign(self.alert_bytes).signature
        self.nacl_verify_key.verify(self.alert_bytes, signature)
        token = self._jws_sign(self.alert_bytes)
        if self._jws_verify(token) != self.alert_bytes:
            raise SystemExit("benchmark set-up broken: JWS round trip")

    @staticmethod
    def _args(record: KafkaRecord) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
        return record.value, record.headers, record.key

    def _jws_sign(self, payload: bytes) -> str:
        with warnings.catch_warnings():  # joserfc flags "EdDSA" as superseded by "Ed25519" (RFC 9864)
            warnings.simplefilter("ignore")
            return jws.serialize_compact({"alg": "EdDSA"}, payload, self.jose_key, algorithms=["EdDSA"])

    def _jws_verify(self, token: str) -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = jws.deserialize_compact(token, self.jose_key, algorithms=["EdDSA"])
        payload: bytes = result.payload
        return payload

    def cases(self) -> dict[str, tuple[Case, int]]:
        """Name -> (a run over ``events`` items, item count)."""
        n = self.events
        reader, bystander = self.reader, self.bystander

        def raw_pair(payload: bytes) -> Case:
            key, verify_key = self.nacl_key, self.nacl_verify_key

            def run() -> None:
                for _ in range(n):
                    verify_key.verify(payload, key.sign(payload).signature)

            return run

        def jws_pair(payload: bytes) -> Case:
            def run() -> None:
                for _ in range(n):
                    self._jws_verify(self._jws_sign(payload))

            return run

        alert_sig = self.nacl_key.sign(self.alert_bytes).signature
        alert_token = self._jws_sign(self.alert_bytes)
        return {
            "gateway sign: alert (no sealing)": (_loop(self.sign_alert, self.alerts), n),
            "gateway verify: alert (no sealing)": (
                _loop(lambda r: reader.verify_kafka(r.value, r.headers, r.key), self.alert_records), n),
            "gateway sign: referral (sealed for 1)": (_loop(self.sign_referral, self.referrals), n),
            "gateway verify: referral, recipient (opens)": (
                _loop(lambda r: reader.verify_kafka(r.value, r.headers, r.key), self.referral_records), n),
            "gateway verify: referral, not a recipient": (
                _loop(lambda r: bystander.verify_kafka(r.value, r.headers, r.key), self.referral_records), n),
            "raw PyNaCl sign": (_loop(lambda _: self.nacl_key.sign(self.alert_bytes), range(n)), n),
            "raw PyNaCl verify": (
                _loop(lambda _: self.nacl_verify_key.verify(self.alert_bytes, alert_sig), range(n)), n),
            "raw PyNaCl sign+verify: alert bytes": (raw_pair(self.alert_bytes), n),
            "raw PyNaCl sign+verify: referral bytes": (raw_pair(self.referral_bytes), n),
            "JWS joserfc sign": (_loop(lambda _: self._jws_sign(self.alert_bytes), range(n)), n),
            "JWS joserfc verify": (_loop(lambda _: self._jws_verify(alert_token), range(n)), n),
            "JWS joserfc sign+verify: alert bytes": (jws_pair(self.alert_bytes), n),
            "JWS joserfc sign+verify: referral bytes": (jws_pair(self.referral_bytes), n),
        }  # fmt: skip


def measure(contract: Contract, repetitions: int) -> dict[str, list[float]]:
    """Per-item microseconds of every case, one value per repetition (cases rotate order each time)."""
    cases = contract.cases()
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: caches, allocator, branch predictors
        case, count = cases[name]
        _time_per_item(case, count)
    for repetition in range(repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            case, count = cases[name]
            gc.collect()
            samples[name].append(_time_per_item(case, count))
    return samples


def ratios(samples: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per-repetition ratios (same repetition = same machine conditions), for the targets."""
    gateway = _sum(samples["gateway sign: alert (no sealing)"], samples["gateway verify: alert (no sealing)"])
    sealed = _sum(samples["gateway sign: referral (sealed for 1)"],
                  samples["gateway verify: referral, recipient (opens)"])  # fmt: skip
    raw = samples["raw PyNaCl sign+verify: alert bytes"]
    raw_referral = samples["raw PyNaCl sign+verify: referral bytes"]
    jose = samples["JWS joserfc sign+verify: alert bytes"]
    jose_referral = samples["JWS joserfc sign+verify: referral bytes"]
    return {
        "gateway sign+verify, no sealing (us)": gateway,
        "gateway sign+verify, sealed (us)": sealed,
        "no sealing / raw PyNaCl": [g / r for g, r in zip(gateway, raw, strict=True)],
        "no sealing / JWS joserfc": [g / j for g, j in zip(gateway, jose, strict=True)],
        "sealed / raw PyNaCl": [g / r for g, r in zip(sealed, raw_referral, strict=True)],
        "sealed / JWS joserfc": [g / j for g, j in zip(sealed, jose_referral, strict=True)],
    }


def _example_referral() -> dict[str, Any]:
    path = default_schema_root() / "case.referral/examples/1.0/valid-kbri-kuching-plantation-worker.json"
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


def _sum(first: Sequence[float], second: Sequence[float]) -> list[float]:
    return [a + b for a, b in zip(first, second, strict=True)]


def breakdown(contract: Contract, count: int) -> dict[str, float]:
    """Microseconds per call of the parts of the no-sealing sign and verify paths, each timed alone."""
    d = contract.deployment
    alert = contract.alerts[0]
    event = contract.sign_alert(alert)
    record = event.to_kafka()
    schema = d.schemas.latest(ALERT_TYPE)
    data = orjson.loads(event.data)
    dsse = DsseEnvelope.from_b64(event.dssematerial or "")
    message = dsse.signed_message()
    signature = contract.signer.key.sign(message)
    public = contract.signer.key.public_key
    attributes = event.attributes()
    full_referral = _example_referral()
    openssl_key = ed25519.Ed25519PrivateKey.generate()
    openssl_public = openssl_key.public_key()
    openssl_signature = openssl_key.sign(message)
    parts: dict[str, Callable[[], object]] = {
        "Ed25519 sign (libsodium, 83-byte PAE)": lambda: contract.signer.key.sign(message),
        "Ed25519 verify (libsodium)": lambda: public.verify(signature, message),
        "JSON Schema validation (jsonschema-rs), one pass": lambda: schema.validate(data),
        "RFC 8785 data bytes (orjson fast path + domain walk)": lambda: canonical_json(alert),
        "RFC 8785 data bytes, reference rfc8785 (for comparison)": lambda: rfc8785.dumps(alert),
        "RFC 8785 of the 2.9 KB referral example, fast path": lambda: canonical_json(full_referral),
        "RFC 8785 of the 2.9 KB referral example, rfc8785": lambda: rfc8785.dumps(full_referral),
        "parse + canonical check of record value": lambda: parse_canonical(record.value),
        "CloudEvents attributes check + Envelope": lambda: Envelope.from_attributes(attributes, event.data),
        "Kafka record -> Envelope (headers, parse, check)": lambda: Envelope.from_kafka(
            record.value, record.headers, record.key),
        "verification material (13 SHA-256)": lambda: verification_material(
            attributes, event.data, SIGNED_EXTENSIONS),
        "DSSE envelope decode (base64, JSON)": lambda: DsseEnvelope.from_b64(event.dssematerial or ""),
        "DSSE envelope encode (JSON, base64)": dsse.to_b64,
        "signedextattrs check": lambda: check_signed_extensions(event.signedextattrs),
        "PAE": lambda: pae(dsse.payload_type, dsse.payload),
        "Envelope -> Kafka record": event.to_kafka,
        "datetime.now(UTC)": lambda: datetime.now(UTC),
        "Ed25519 sign, OpenSSL (cryptography), for comparison": lambda: openssl_key.sign(message),
        "Ed25519 verify, OpenSSL (cryptography), for comparison": lambda: openssl_public.verify(
            openssl_signature, message),
    }  # fmt: skip
    result: dict[str, float] = {}
    for name, part in parts.items():
        values = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(count):
                part()
            values.append((time.perf_counter() - start) / count * 1e6)
        result[name] = min(values)  # a part alone: the least disturbed run
    return result


def scaling(contract: Contract, sizes: Sequence[int], repeat_small: int) -> list[dict[str, Any]]:
    """Sign + ``to_kafka`` + verify streamed (nothing kept) for each size: per-event cost and peak RSS.

    Sizes of at most 10,000 events are run ``repeat_small`` times (median reported: a few seconds of a noisy
    machine); larger ones once, timed per chunk of 10,000, so the first and last chunks can be compared too.
    """
    d = contract.deployment
    template = contract.alerts[0]
    reader = contract.reader
    chunk = 10_000

    def stream(first: int, count: int) -> float:
        start = time.perf_counter()
        for index in range(first, first + count):
            event = build_event(
                signer=contract.signer, registry=d.registry, schemas=d.schemas, event_type=ALERT_TYPE,
                data={**template, "alert_id": f"ALR-KCH-{index:09d}"},
            )  # fmt: skip
            record = event.to_kafka()
            if not isinstance(reader.verify_kafka(record.value, record.headers, record.key), Accepted):
                raise SystemExit(f"scaling run rejected event {index}")
        return (time.perf_counter() - start) / count * 1e6

    rows: list[dict[str, Any]] = []
    for size in sizes:
        gc.collect()
        rss_before = self_peak_rss_mb()
        if size <= chunk:
            runs = [stream(0, size) for _ in range(repeat_small)]
            row: dict[str, Any] = {"events": size, "us_per_event": median(runs), "runs_us_per_event": runs}
        else:
            chunks = [stream(first, min(chunk, size - first)) for first in range(0, size, chunk)]
            row = {"events": size, "us_per_event": sum(chunks) / len(chunks), "chunk_events": chunk,
                   "chunk_us_per_event": {"first": chunks[0], "median": median(chunks), "last": chunks[-1],
                                          "min": min(chunks), "max": max(chunks)}}  # fmt: skip
        row.update(events_per_second=1e6 / row["us_per_event"], peak_rss_mb_before=rss_before,
                   peak_rss_mb_after=self_peak_rss_mb())  # fmt: skip
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--events", type=int, help="events per case and repetition (default 2,000)")
    parser.add_argument("--repetitions", type=int, help="repetitions per case (default 7)")
    parser.add_argument("--scaling", type=int, nargs="*", help="stream sizes (default 10,000 1,000,000)")
    args = parser.parse_args(argv)
    events = args.events or (20 if args.quick else 2000)
    repetitions = args.repetitions or (2 if args.quick else 7)
    sizes = args.scaling if args.scaling is not None else ([50, 200] if args.quick else [10_000, 1_000_000])

    facts = machine()
    contract = Contract(events)
    samples = measure(contract, repetitions)
    medians = {name: median(values) for name, values in samples.items()}
    derived = {name: median(values) for name, values in ratios(samples).items()}
    sizes_text = f"alert {len(contract.alert_bytes)} B, referral {len(contract.referral_bytes)} B canonical"
    print(f"contract: {events:,} events x {repetitions} repetitions; {sizes_text}; "
          f"{facts['cpu_model']}, {facts['nproc']} cores")  # fmt: skip
    print_table("per event (median of repetitions)", ["case", "us/event", "events/s (1 core)"],
                [(name, us, 1e6 / us) for name, us in medians.items()])  # fmt: skip
    print_table("targets (medians of per-repetition ratios)", ["quantity", "value"], list(derived.items()))
    parts = breakdown(contract, 200 if args.quick else 20_000)
    print_table("breakdown: parts timed alone", ["part", "us/call"], list(parts.items()))
    scale = scaling(contract, sizes, 1 if args.quick else 5)
    print_table("scaling: sign + to_kafka + verify streamed, no sealing",
                ["events", "us/event", "events/s", "peak RSS MiB before", "peak RSS MiB after"],
                [(r["events"], r["us_per_event"], r["events_per_second"], r["peak_rss_mb_before"],
                  r["peak_rss_mb_after"]) for r in scale])  # fmt: skip
    if len(scale) >= 2:
        change = scale[-1]["us_per_event"] / scale[0]["us_per_event"] - 1
        print(f"per-event cost {scale[-1]['events']:,} vs {scale[0]['events']:,}: {change:+.1%}")
        chunks = scale[-1].get("chunk_us_per_event")
        if chunks:
            print("per-event cost per 10,000 of the longest stream (us): "
                  + ", ".join(f"{name} {value:.0f}" for name, value in chunks.items()))  # fmt: skip
    path = write_results("contract", {
        "benchmark": "contract", "quick": args.quick, "machine": facts,
        "payload_bytes": {"alert": len(contract.alert_bytes), "referral": len(contract.referral_bytes)},
        "events_per_case": events, "repetitions": repetitions,
        "us_per_event": {"median": medians, "samples": samples},
        "targets": derived, "breakdown_us": parts, "scaling": scale,
    })  # fmt: skip
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
