"""Microseconds per cryptographic operation on a ~4 KB referral payload; writes bench/results/crypto.json.

Run: .venv/bin/python bench/bench_crypto.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
import orjson
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.adapters.crypto import Ed25519Verifier, X25519Sealer  # noqa: E402
from hub.adapters.keystore import KeyStore, generate_master_key  # noqa: E402
from hub.services.crypto_port import KeyKind, SignaturePurpose  # noqa: E402
from hub.settings import KeySettings  # noqa: E402

RECIPIENT = "sj-camhs-1"
SCHOOL = "sj-school-yueyang"
STUDENT_ID = "310117200901011236"


def referral_bundle() -> bytes:
    """A made-up school → CAMHS referral Bundle, about 4 KB of FHIR R4B JSON."""
    bundle = {
        "resourceType": "Bundle",
        "id": "b-7f3c2a",
        "type": "message",
        "timestamp": "2024-05-13T09:12:44+08:00",
        "entry": [
            {
                "fullUrl": "urn:uuid:mh-1",
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": "mh-1",
                    "eventCoding": {
                        "system": "https://qixin.example/fhir/CodeSystem/message-event",
                        "code": "referral-request",
                    },
                    "source": {
                        "name": "松江区岳阳街道中心小学心理筛查平台",
                        "endpoint": "https://school.example/fhir",
                    },
                    "destination": [
                        {"endpoint": "urn:qixin:hub", "receiver": {"reference": "Organization/sj-camhs-1"}}
                    ],
                    "sender": {"reference": "Organization/sj-school-yueyang"},
                    "focus": [{"reference": "urn:uuid:task-1"}],
                },
            },
            {
                "fullUrl": "urn:uuid:task-1",
                "resource": {
                    "resourceType": "Task",
                    "id": "task-1",
                    "status": "requested",
                    "intent": "order",
                    "priority": "urgent",
                    "focus": {"reference": "urn:uuid:sr-1"},
                    "for": {"reference": "urn:uuid:pat-1"},
                    "authoredOn": "2024-05-13T09:10:00+08:00",
                    "requester": {"reference": "Organization/sj-school-yueyang"},
                    "owner": {"reference": "Organization/sj-camhs-1"},
                },
            },
            {
                "fullUrl": "urn:uuid:sr-1",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "sr-1",
                    "status": "active",
                    "intent": "order",
                    "priority": "urgent",
                    "subject": {"reference": "urn:uuid:pat-1"},
                    "reasonCode": [
                        {
                            "coding": [
                                {
                                    "system": "https://qixin.example/fhir/CodeSystem/referral-reason",
                                    "code": "screening-positive",
                                    "display": "筛查阳性",
                                }
                            ]
                        },
                        {
                            "coding": [
                                {
                                    "system": "https://qixin.example/fhir/CodeSystem/referral-reason",
                                    "code": "suicidal-ideation",
                                    "display": "自杀意念",
                                }
                            ]
                        },
                    ],
                    "note": [
                        {
                            "text": "学生在PHQ-9第9题得分为1，班主任反映近两周情绪低落、睡眠差，"
                            "家长已同意转介至儿童青少年心理门诊评估。"
                        }
                    ],
                },
            },
            {
                "fullUrl": "urn:uuid:pat-1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "pat-1",
                    "identifier": [
                        {
                            "system": "urn:qixin:pseudonym",
                            "value": "psn:6153eebed95ff655:qxhwmrdmg6vgezs4ktzf7pk7kn42rsrh",
                        },
                        {"system": "urn:oid:1.2.156.112604.1.2.1", "value": STUDENT_ID},
                    ],
                    "name": [{"text": "张小明"}],
                    "gender": "male",
                    "birthDate": "2009-01",
                    "address": [{"district": "松江区", "city": "上海市", "text": "岳阳街道"}],
                },
            },
            {
                "fullUrl": "urn:uuid:rp-1",
                "resource": {
                    "resourceType": "RelatedPerson",
                    "id": "rp-1",
                    "patient": {"reference": "urn:uuid:pat-1"},
                    "relationship": [{"coding": [{"code": "MTH", "display": "mother"}]}],
                    "name": [{"text": "李女士"}],
                    "telecom": [{"system": "phone", "value": "+86-139-0000-0000"}],
                },
            },
            {
                "fullUrl": "urn:uuid:consent-1",
                "resource": {
                    "resourceType": "Consent",
                    "id": "consent-1",
                    "status": "active",
                    "scope": {"coding": [{"code": "patient-privacy"}]},
                    "category": [{"coding": [{"code": "guardian-consent"}]}],
                    "patient": {"reference": "urn:uuid:pat-1"},
                    "dateTime": "2024-05-12T18:30:00+08:00",
                    "provision": {
                        "type": "permit",
                        "period": {"start": "2024-05-12", "end": "2024-11-12"},
                        "actor": [{"reference": {"reference": "Organization/sj-camhs-1"}}],
                        "purpose": [{"code": "treatment"}],
                        "class": [
                            {"code": c} for c in ("identity", "contact", "demographics", "screening", "risk")
                        ],
                    },
                },
            },
            {
                "fullUrl": "urn:uuid:qr-1",
                "resource": {
                    "resourceType": "QuestionnaireResponse",
                    "id": "qr-1",
                    "status": "completed",
                    "questionnaire": "http://loinc.org/44249-1",
                    "subject": {"reference": "urn:uuid:pat-1"},
                    "authored": "2024-05-10T10:00:00+08:00",
                    "item": [
                        {"linkId": f"phq9-{i}", "answer": [{"valueInteger": v}]}
                        for i, v in enumerate((2, 2, 3, 1, 2, 2, 1, 1, 1), start=1)
                    ],
                },
            },
            {
                "fullUrl": "urn:uuid:obs-1",
                "resource": {
                    "resourceType": "Observation",
                    "id": "obs-1",
                    "status": "final",
                    "code": {
                        "coding": [
                            {"system": "http://loinc.org", "code": "44261-6", "display": "PHQ-9 total score"}
                        ]
                    },
                    "subject": {"reference": "urn:uuid:pat-1"},
                    "valueInteger": 15,
                    "interpretation": [{"text": "moderately severe"}],
                    "derivedFrom": [{"reference": "urn:uuid:qr-1"}],
                },
            },
        ],
    }
    return orjson.dumps(bundle)


def measure(fn: Callable[[], object], seconds: float) -> dict[str, float]:
    """Median and p95 of per-call µs over batches filling ``seconds``."""
    for _ in range(50):
        fn()
    batch = 200
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        start = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - start) / batch / 1000)
    samples.sort()
    return {
        "median_us": round(statistics.median(samples), 2),
        "p95_us": round(samples[int(len(samples) * 0.95) - 1 if len(samples) > 1 else 0], 2),
        "calls": len(samples) * batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.5, help="time per operation")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "crypto.json")
    args = parser.parse_args()

    payload = referral_bundle()
    with tempfile.TemporaryDirectory() as tmp:
        settings = KeySettings(store_dir=Path(tmp) / "keys", master_key=SecretStr(generate_master_key()))
        KeyStore.initialise(settings)
        started = time.perf_counter()
        store = KeyStore.open(settings)
        open_ms = (time.perf_counter() - started) * 1000
        store.generate(RECIPIENT, KeyKind.X25519)
        store.generate(SCHOOL, KeyKind.ED25519)
        # Everything below is pre-loaded: no disk, no KDF on the measured path.
        registry = store.public_registry()
        sealer = X25519Sealer(registry)
        opener = store.opener(RECIPIENT)
        signer = store.signer(SCHOOL)
        verifier = Ed25519Verifier(registry)
        psn = store.pseudonymiser()
        sealed = sealer.seal(payload, referral_id="ref-1", recipient_org=RECIPIENT, delivery_id="dlv-1")
        token = signer.sign(payload, purpose=SignaturePurpose.SUBMISSION)
        assert opener.open_sealed(sealed.ciphertext, sealed.wrapped_key, referral_id="ref-1") == payload

        ops: dict[str, Callable[[], object]] = {
            "seal": lambda: sealer.seal(
                payload, referral_id="ref-1", recipient_org=RECIPIENT, delivery_id="dlv-1"
            ),
            "open": lambda: opener.open_sealed(sealed.ciphertext, sealed.wrapped_key, referral_id="ref-1"),
            "sign": lambda: signer.sign(payload, purpose=SignaturePurpose.SUBMISSION),
            "verify": lambda: verifier.verify(
                payload, token, signer=SCHOOL, purpose=SignaturePurpose.SUBMISSION
            ),
            "pseudonym": lambda: psn.pseudonym(STUDENT_ID),
        }
        results = {name: measure(fn, args.seconds) for name, fn in ops.items()}

    print(
        f"payload {len(payload)} bytes; sealed: ciphertext {len(sealed.ciphertext)} bytes, "
        f"wrapped key {len(sealed.wrapped_key)} bytes; key store open (KDF + check) {open_ms:.2f} ms"
    )
    print(f"{'operation':<12}{'median µs':>12}{'p95 µs':>12}{'calls':>10}")
    for name, r in results.items():
        print(f"{name:<12}{r['median_us']:>12.2f}{r['p95_us']:>12.2f}{r['calls']:>10}")
    document = {
        "payload_bytes": len(payload),
        "ciphertext_bytes": len(sealed.ciphertext),
        "wrapped_key_bytes": len(sealed.wrapped_key),
        "keystore_open_ms": round(open_ms, 3),
        "operations": results,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": platform.machine(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
