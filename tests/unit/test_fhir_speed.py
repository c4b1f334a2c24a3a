"""fhir_core's validators with the fast code give exactly the library's results, and the fast code runs."""

from __future__ import annotations

import copy
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.task import Task
from fhir_core import fhirabstractmodel
from pydantic import BaseModel, ValidationError, model_validator

from schemas import fhirspeed
from schemas import profile as _profile  # noqa: F401  (installs the fast code, as the hub does)

ROOT = Path(__file__).resolve().parents[2]
STATE = fhirspeed._qixin_fhirspeed
FOLDERS = [ROOT / "schemas" / "samples", *sorted((ROOT / "connectors").glob("*/samples"))]
# Samples whose every dict key and list gets a mutation (the rest are validated as they are).
MUTATED = ("referral-school-camhs-high", "feedback-camhs-school")


def _bundles(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("resourceType") == "Bundle":
            yield where, node
            return
        for key, value in node.items():
            yield from _bundles(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _bundles(value, f"{where}[{i}]")


def corpus() -> dict[str, dict[str, Any]]:
    """Every Bundle in the samples and connector fixtures (golden files too), by file and JSON path."""
    found: dict[str, dict[str, Any]] = {}
    for folder in FOLDERS:
        for path in sorted(folder.rglob("*.json")):
            name = str(path.relative_to(ROOT))
            for where, bundle in _bundles(json.loads(path.read_text(encoding="utf-8")), "$"):
                found[f"{name}:{where}"] = bundle
    return found


CORPUS = corpus()
SAMPLE = CORPUS["schemas/samples/referral-school-camhs-high.json:$"]


def _resource(rtype: str) -> dict[str, Any]:
    return next(
        copy.deepcopy(e["resource"]) for e in SAMPLE["entry"] if e["resource"]["resourceType"] == rtype
    )


def _with(*resources: dict[str, Any]) -> dict[str, Any]:
    """A copy of the sample Bundle with these resources replacing those of their type."""
    bundle = copy.deepcopy(SAMPLE)
    for res in resources:
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == res["resourceType"]:
                entry["resource"] = res
                break
        else:
            bundle["entry"].append({"fullUrl": f"urn:uuid:{res['resourceType']}", "resource": res})
    return bundle


def _edit(rtype: str, **changes: Any) -> dict[str, Any]:
    res = _resource(rtype)
    for key, value in changes.items():
        if value is _DROP:
            res.pop(key, None)
        else:
            res[key] = value
    return _with(res)


_DROP = object()
_EXT = {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]}

CRAFTED: dict[str, dict[str, Any]] = {
    "entry None": {**copy.deepcopy(SAMPLE), "entry": [None]},
    "entry None after an entry": {**copy.deepcopy(SAMPLE), "entry": [*SAMPLE["entry"], None]},
    "Patient.identifier [None]": _edit("Patient", identifier=[None]),
    "Patient.identifier and address with None": _edit(
        "Patient", identifier=[None, {"value": "x"}], address=[{"city": "x"}, None]
    ),
    "Patient.name [] (empty list)": _edit("Patient", name=[]),
    "Patient.identifier not a list": _edit("Patient", identifier={"value": "x"}),
    "primitive list keeps its None": _edit(
        "Patient", name=[{"given": ["A", None], "_given": [None, {"extension": _EXT["extension"]}]}]
    ),
    "Task without status": _edit("Task", status=_DROP),
    "Task without status and intent": _edit("Task", status=_DROP, intent=_DROP),
    "Task status null": _edit("Task", status=None),
    "Task without status, _status extension": _edit("Task", status=_DROP, _status=_EXT),
    "Task without status, empty _status": _edit("Task", status=_DROP, _status={"id": "s"}),
    "Task.input without value (required choice)": _edit("Task", input=[{"type": {"text": "x"}}]),
    "Task.input with two values": _edit(
        "Task", input=[{"type": {"text": "x"}, "valueString": "a", "valueBoolean": True}]
    ),
    "Task.input with one value": _edit("Task", input=[{"type": {"text": "x"}, "valueString": "a"}]),
    "Observation valueString and valueQuantity": _with(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "valueString": "a",
            "valueQuantity": {"value": 1},
        }
    ),
    "Observation effective twice, value twice": _with(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "effectiveDateTime": "2026-01-01",
            "effectivePeriod": {"start": "2026-01-01"},
            "valueString": "a",
            "valueBoolean": False,
        }
    ),
    "Observation value null": _with(
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": None}
    ),
    "MessageHeader without eventCoding (required choice)": _edit("MessageHeader", eventCoding=_DROP),
    "MessageHeader eventCoding and eventUri": _edit("MessageHeader", eventUri="http://example.org/e"),
    "Extension with two values": _edit(
        "Patient", extension=[{"url": "http://example.org/x", "valueString": "a", "valueCode": "b"}]
    ),
    "Consent provision class [None] (aliased list field)": _edit(
        "Consent", provision={"type": "permit", "class": [None]}
    ),
    "Consent provision class_fhir [None] (by name)": _edit(
        "Consent", provision={"type": "permit", "class_fhir": [None]}
    ),
    "Consent provision class ok, class_fhir [None]": _edit(
        "Consent", provision={"type": "permit", "class": [{"code": "x"}], "class_fhir": [None]}
    ),
    "unknown field": _edit("Patient", colour="blue"),
    "wrong resourceType": _edit("Patient", resourceType="Nonsense"),
    "Bundle without type": {k: v for k, v in SAMPLE.items() if k != "type"},
    "not a dict entry": {**copy.deepcopy(SAMPLE), "entry": ["x"]},
}


def _mutations(name: str, bundle: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each key dropped, a None appended to each list, a second value[x] beside each one."""

    def paths(node: Any, at: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
        yield at, node
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            yield from paths(value, (*at, key))

    def edited(at: tuple[Any, ...], change: Any) -> dict[str, Any]:
        copied = copy.deepcopy(bundle)
        node = copied
        for key in at:
            node = node[key]
        change(node)
        return copied

    for at, node in paths(bundle, ()):
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in at)
        if isinstance(node, list):
            yield f"{name}{where} + None", edited(at, lambda n: n.append(None))
        elif isinstance(node, dict):
            for key in node:
                yield f"{name}{where} - {key}", edited(at, lambda n, k=key: n.pop(k))
            if any(k.startswith("value") for k in node):
                extra = "valueBoolean" if "valueBoolean" not in node else "valueString"
                yield f"{name}{where} + {extra}", edited(at, lambda n, k=extra: n.setdefault(k, True))


MUTATIONS = dict(
    m for name in MUTATED for key, b in CORPUS.items() if name in key for m in _mutations(name, b)
)


def _outcome(data: Any) -> Any:
    try:
        Bundle.model_validate(data)
    except ValidationError as exc:
        return [(e["type"], e["loc"], e["msg"], repr(e["input"])) for e in exc.errors(include_url=False)]
    except Exception as exc:  # any other error must be the same too
        return (type(exc).__name__, str(exc))
    return "valid"


@pytest.fixture
def both() -> Iterator[None]:
    yield
    assert fhirspeed.install()


def _library_and_fast(data: Any) -> tuple[Any, Any]:
    fhirspeed.uninstall()
    library = _outcome(copy.deepcopy(data))
    assert fhirspeed.install()
    return library, _outcome(copy.deepcopy(data))


@pytest.mark.usefixtures("both")
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_fixture_bundle_gets_the_library_outcome(name: str) -> None:
    library, fast = _library_and_fast(CORPUS[name])
    assert fast == library


def test_the_corpus_holds_valid_and_invalid_bundles() -> None:
    outcomes = [_outcome(b) for b in CORPUS.values()]
    assert len(CORPUS) >= 50
    assert "valid" in outcomes
    assert any(o != "valid" for o in outcomes)  # schemas/samples/broken/fhir-structure.json


@pytest.mark.usefixtures("both")
@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_invalid_bundles_get_the_library_errors(name: str) -> None:
    library, fast = _library_and_fast(CRAFTED[name])
    assert fast == library


def test_crafted_cases_hit_every_slow_path() -> None:
    """The crafted cases do reach the library's errors (else the test above proves little)."""
    types_seen = {e[0] for data in CRAFTED.values() if isinstance(o := _outcome(data), list) for e in o}
    assert {"list_type", "model_field_validation.missing", "value_error"} <= types_seen
    assert _outcome(CRAFTED["Task without status, _status extension"]) == "valid"
    assert _outcome(CRAFTED["primitive list keeps its None"]) == "valid"


@pytest.mark.usefixtures("both")
def test_mutations_of_samples_get_the_library_outcome() -> None:
    fhirspeed.uninstall()
    library = {name: _outcome(data) for name, data in MUTATIONS.items()}
    assert fhirspeed.install()
    fast = {name: _outcome(data) for name, data in MUTATIONS.items()}
    differ = [name for name in MUTATIONS if fast[name] != library[name]]
    assert differ == []
    assert sum(o != "valid" for o in library.values()) > 100  # the mutations do break things


@pytest.mark.usefixtures("both")
def test_validate_assignment_runs_the_same_checks() -> None:
    """fhir_core models validate assignment, which runs the after validator again."""
    results = []
    for install in (fhirspeed.uninstall, fhirspeed.install):
        install()
        task = Task.model_validate(_resource("Task"))
        with pytest.raises(ValidationError) as caught:
            task.status = None
        results.append([(e["type"], e["loc"], e["msg"]) for e in caught.value.errors()])
    assert results[0] == results[1]
    assert results[0][0][0] == "model_field_validation.missing"


def test_the_compiled_validators_run_the_fast_code() -> None:
    assert fhirspeed.active()
    base = fhirabstractmodel.FHIRAbstractModel
    reject = base.__dict__["reject_null_complex_elements"].__func__
    after = base.__dict__["validate_after_model_construction"]
    assert reject.__code__ is fhirspeed.reject_null_complex_elements.__code__
    assert after.__code__ is fhirspeed.validate_after_model_construction.__code__
    # Behaviour: only the fast code fills the per-class plans, so a validation that fills them went
    # through it (pydantic calls these function objects from every class's compiled schema).
    STATE.null_keys.clear()
    STATE.after_plans.clear()
    Bundle.model_validate(SAMPLE)
    planned = {cls.__name__ for cls in STATE.null_keys}
    assert {"Bundle", "BundleEntry", "Patient", "Task", "Coding"} <= planned
    assert {"Bundle", "Patient", "Task", "Extension"} <= {cls.__name__ for cls in STATE.after_plans}
    assert set(STATE.after_plans[Task][0]) == {"status", "intent"}
    assert STATE.after_plans[Bundle][0] == ("type",)
    assert STATE.after_plans[Coding] is STATE.nothing


@pytest.mark.usefixtures("both")
def test_uninstall_restores_the_library_code() -> None:
    reject = fhirabstractmodel.FHIRAbstractModel.__dict__["reject_null_complex_elements"].__func__
    fhirspeed.uninstall()
    assert not fhirspeed.active()
    assert reject.__code__ is STATE.original_reject.__code__
    STATE.null_keys.clear()
    Bundle.model_validate(SAMPLE)
    assert STATE.null_keys == {}


def test_another_fhir_core_version_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fhirspeed.importlib.metadata, "version", lambda _: "1.1.13")
    assert fhirspeed._library() is None
    monkeypatch.undo()
    assert fhirspeed._library() is fhirabstractmodel


@pytest.mark.usefixtures("both")
def test_a_changed_implementation_is_left_alone() -> None:
    assert fhirspeed._shape_ok(fhirabstractmodel)  # while the fast code is in, and without it
    fhirspeed.uninstall()
    assert fhirspeed._shape_ok(fhirabstractmodel)
    assert not fhirspeed._shape_ok(types.SimpleNamespace())

    class Changed(BaseModel):
        """The same validators by name and signature, other bodies (a future fhir_core, say)."""

        @model_validator(mode="before")
        @classmethod
        def reject_null_complex_elements(cls, data: Any) -> Any:
            return data if isinstance(data, dict) else {}

        @model_validator(mode="after")
        def validate_after_model_construction(self) -> Any:
            return self

        def _validate_required_primitive_elements(self) -> None: ...

        def _validate_one_of_many(self) -> None: ...

        @classmethod
        def get_alias_mapping(cls) -> dict[str, str]:
            return {}

    assert not fhirspeed._shape_ok(types.SimpleNamespace(FHIRAbstractModel=Changed))


def test_a_class_with_its_own_rules_takes_the_library_path() -> None:
    class Odd(Task):
        def get_required_fields(self) -> list[tuple[str, str]]:  # type: ignore[override]
            return [("status", "status__ext")] if self.id else []

    assert STATE.plan_after(Odd, Odd.model_construct()) is STATE.slow
    assert fhirspeed._is_literal(Task.get_required_fields)
    assert not fhirspeed._is_literal(Odd.get_required_fields)


@pytest.mark.usefixtures("both")
def test_resource_classes_are_resolved_once_and_the_library_lookup_comes_back() -> None:
    import fhir_core.types as fhir_types

    cached = fhir_types.import_string
    assert isinstance(cached, fhirspeed.CachedImportString)
    calls: list[str] = []
    original = cached.original

    def counting(value: Any) -> Any:
        calls.append(value)
        return original(value)

    cached.original = counting
    try:
        cached._found.clear()
        Bundle.model_validate(SAMPLE)
        first = len(calls)
        Bundle.model_validate(SAMPLE)
    finally:
        cached.original = original
    assert first >= 5  # one per resource class in the Bundle's entries
    assert len(calls) == first  # the second Bundle resolved nothing again
    assert cached("fhir.resources.R4B.patient.Patient").__name__ == "Patient"
    with pytest.raises(Exception, match="Invalid python path"):
        cached("fhir.resources.R4B.nothing.Nothing")  # a failure is the library's own, every time
    fhirspeed.uninstall()
    assert fhir_types.import_string is original
