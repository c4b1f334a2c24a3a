"""Cheaper fhir_core model validators: per-class constants computed once, the library's errors unchanged.

**What was slow** (fhir_core 1.1.12 under pydantic 2). Every FHIR model runs two model validators
that fhir_core defines once, on ``FHIRAbstractModel``, and both recompute per-class constants for
every object. ``reject_null_complex_elements`` (mode "before", once per dict) walks all of
``cls.model_fields`` through pydantic's deprecated ``model_fields`` descriptor and calls
``is_list_type`` / ``is_primitive_type`` per field to find the list-of-complex fields, which depend
on the class alone. ``validate_after_model_construction`` (mode "after"; twice per object, because
fhir_core's own ``__init__`` runs the model schema again inside the outer one) rebuilds
``get_required_fields()``, ``get_one_of_many_fields()`` and ``get_alias_mapping()`` each time,
although most classes have neither kind of field. Together: about 45 % of
``Bundle.model_validate`` on a sample referral.

**What this does.** Per class, once: the keys under which the library looks for a None (names and
aliases of the list-of-complex fields), the attributes of the required primitives, and the
choice-type groups (with their "one is required" flag). Each object is then checked against those
directly. When that check finds anything the library would report or must look at more closely (a
None in such a list, a required primitive without a value, no value or several values in a
choice group), the object goes to fhir_core's own code, which raises its own errors. The fast code
never raises anything itself.

**Why the results are identical.** The fast checks are the library's own tests over the lists the
library would compute: ``isinstance(value, list)`` and ``item is None`` (under every key the
library may read, a superset); ``getattr(self, key, missing) in (missing, None)``; ``getattr(...)
is not None`` counted per choice group (via ``attrgetter`` and ``operator.is_not``; a missing
attribute goes to the library). So every object the library rejects is handed to the library, and
an object that passes the fast checks passes the library's too. A class is planned only when its
``get_required_fields`` / ``get_one_of_many_fields`` are literals (their code uses no names and
never reads ``self``: true of all 666 R4B classes), it overrides none of the methods involved, and
the library's own reads succeed for it (aliases, fields, the choice-prefix assertion); any other
class always runs the library's code, as does a dict subclass or a class whose ``model_fields`` is
not its ``__pydantic_fields__``. tests/unit/test_fhir_speed.py compares both on every fixture
Bundle (60), crafted invalid ones and ~400 mutations of two samples.

**And one lookup.** fhir_core resolves every resource's class in a Bundle from a dotted path on each
call; ``CachedImportString`` (below) keeps what resolved, and ``install()`` puts it in place of
``fhir_core.types.import_string`` (about 10 % of the sample's validation).

**How it takes effect.** pydantic binds model validators into each class's compiled core schema
when the class is built, so re-assigning them on ``FHIRAbstractModel`` would not reach the classes
already built. Instead the ``__code__`` of the two function objects that every class's schema calls
is replaced. That code runs with ``fhir_core.fhirabstractmodel``'s globals; the one name it needs
there, ``_qixin_fhirspeed`` (this module's state), is put into that namespace by ``install()``.
Copies of the two functions built from the saved code objects serve the slow path, and
``uninstall()`` puts the library's code back (tests and benchmarks compare both).

**Guard.** ``install()`` does nothing unless fhir-core is version 1.1.12 and both functions have
the shape read here (parameters, no closure, no defaults, the names their code uses) and pydantic's
decorator records point at them; it never logs. Plans are filled lazily, per class, by plain dict
stores of values computed from the class alone: concurrent validations may compute one twice, but
store equal values. ``install()`` runs once, at import of schemas/profile.py, before any thread
validates; swapping back and forth is for tests and benchmarks (a call already running finishes in
the code it started with; either code gives the same results).

**Effect** (bench/README.md, "Round 3: fhir_core validators"): CPU per ``Bundle.model_validate``
of the sample referral, medians of five alternating 2 s rounds in one process, 3.0–3.3 ms with the
library's validators, 1.6–1.9 ms with these (−42 to −46 %).
"""

from __future__ import annotations

import dis
import importlib.metadata
import operator
import types
from typing import Any

FHIR_CORE_VERSION = "1.1.12"
_GLOBAL_NAME = "_qixin_fhirspeed"
# The names the two library functions' code uses: a changed implementation changes these.
_REJECT_NAMES = frozenset(
    {
        "isinstance",
        "dict",
        "model_fields",
        "items",
        "is_list_type",
        "is_primitive_type",
        "endswith",
        "alias",
        "get",
        "list",
        "any",
        "append",
        "PydanticCustomError",
        "ValidationError",
        "from_exception_data",
        "__name__",
    }
)
_AFTER_NAMES = frozenset({"_validate_required_primitive_elements", "_validate_one_of_many"})

# Keys of a class's list-of-complex fields; None: not planned, the library decides every time.
NullKeys = frozenset[str] | None
# (attributes of the required primitives, ((attrgetter of a choice group, Nones as many, required), ...)),
# or one of _State.nothing / _State.slow.
AfterPlan = tuple[Any, ...]


class _State:
    """Everything the replacement code reaches through ``fhirabstractmodel._qixin_fhirspeed``."""

    def __init__(self) -> None:
        self.missing = object()
        self.nothing: AfterPlan = ()  # falsy: a class with nothing to check
        self.slow: AfterPlan = ((), ())  # recognised by identity: the library's code, always
        self.is_not = operator.is_not
        # cls -> (the model_fields dict the keys come from, its keys)
        self.null_keys: dict[type, tuple[object, NullKeys]] = {}
        self.after_plans: dict[type, AfterPlan] = {}
        self.base: Any = None  # FHIRAbstractModel
        self.is_list_type: Any = None
        self.is_primitive_type: Any = None
        self.original_reject: Any = None  # copies that keep running the library's code
        self.original_after: Any = None
        self.reject: Any = None  # the library's function objects whose __code__ is swapped
        self.after: Any = None
        self.reject_code: types.CodeType | None = None  # their own code objects
        self.after_code: types.CodeType | None = None
        self.types_module: Any = None  # fhir_core.types, and its own import_string
        self.import_string: Any = None

    def plan_nulls(self, cls: Any) -> tuple[object, NullKeys]:
        """Names and aliases of the list-of-complex fields: where the library looks for a None.

        The library reads one key per field (the alias when the data has it, else the name); a None
        under any of these keys sends the dict to the library, which then decides.
        """
        fields: dict[str, Any] = cls.model_fields
        keys: NullKeys = None
        if fields is getattr(cls, "__pydantic_fields__", None):  # what the fast code compares with
            checked = [
                (name, field.alias)
                for name, field in fields.items()
                if self.is_list_type(field)
                and not self.is_primitive_type(field)
                and not name.endswith("__ext")
            ]
            keys = frozenset([name for name, _ in checked] + [alias for _, alias in checked if alias])
        entry = (fields, keys)
        self.null_keys[cls] = entry
        return entry

    def plan_after(self, cls: Any, instance: Any) -> AfterPlan:
        plan = self._after_plan(cls, instance)
        self.after_plans[cls] = plan
        return plan

    def _after_plan(self, cls: Any, instance: Any) -> AfterPlan:
        base = self.base
        for name in ("_validate_required_primitive_elements", "_validate_one_of_many"):
            if getattr(cls, name, None) is not base.__dict__[name]:
                return self.slow
        if (
            getattr(cls.get_alias_mapping, "__func__", None)
            is not base.__dict__["get_alias_mapping"].__func__
        ):
            return self.slow
        get_required = getattr(cls, "get_required_fields", None)
        get_choices = getattr(cls, "get_one_of_many_fields", None)
        if not (
            isinstance(get_required, types.FunctionType)
            and isinstance(get_choices, types.FunctionType)
            and _is_literal(get_required)
            and _is_literal(get_choices)
        ):
            return self.slow
        try:
            fields = cls.model_fields
            aliases = cls.get_alias_mapping()
            required = []
            for name, _ext in get_required(instance):
                key = aliases[name]
                if key not in fields:  # the library reads it when reporting
                    return self.slow
                required.append(key)
            choices = []
            for prefix, names in get_choices(instance).items():
                extra = fields[names[0]].json_schema_extra
                if extra["one_of_many"] != prefix or len(names) < 2:  # the library asserts the prefix
                    return self.slow
                needed = extra["one_of_many_required"] is True
                choices.append((operator.attrgetter(*names), (None,) * len(names), needed))
        except (KeyError, IndexError, TypeError, AttributeError):
            return self.slow
        if not required and not choices:
            return self.nothing
        return tuple(required), tuple(choices)


_qixin_fhirspeed = _State()


def _is_literal(method: Any) -> bool:
    """A function whose result depends on nothing: no names, no closure, its argument never read."""
    if not isinstance(method, types.FunctionType):
        return False
    code = method.__code__
    if method.__closure__ is not None or code.co_names or code.co_freevars or code.co_cellvars:
        return False
    if code.co_argcount != 1 or code.co_kwonlyargcount or code.co_flags & (0x04 | 0x08):  # *args, **kw
        return False
    this = code.co_varnames[0]
    return not any(ins.argval == this and "FAST" in ins.opname for ins in dis.get_instructions(code))


# --- the replacement bodies (they run with fhir_core.fhirabstractmodel's globals) ---------------------------


def reject_null_complex_elements(cls: Any, data: Any) -> Any:
    """Fast path of fhir_core's ``reject_null_complex_elements``: a None found goes to the library."""
    if type(data) is not dict:
        return _qixin_fhirspeed.original_reject(cls, data) if isinstance(data, dict) else data
    state = _qixin_fhirspeed
    entry = state.null_keys.get(cls)
    if entry is None or entry[0] is not cls.__pydantic_fields__:
        entry = state.plan_nulls(cls)
    keys = entry[1]
    if keys is None:
        return state.original_reject(cls, data)
    if keys.isdisjoint(data):
        return data
    for key in keys.intersection(data):
        value = data[key]
        if isinstance(value, list):
            for item in value:
                if item is None:
                    return state.original_reject(cls, data)
    return data


def validate_after_model_construction(self: Any) -> Any:
    """Fast path of fhir_core's after validator: anything to report goes to the library's methods."""
    state = _qixin_fhirspeed
    plan: Any = state.after_plans.get(self.__class__, state.missing)
    if not plan:
        return self
    if plan is state.missing:
        plan = state.plan_after(self.__class__, self)
        if not plan:
            return self
    if plan is state.slow:
        return state.original_after(self)
    required, choices = plan
    if required:
        missing = state.missing
        for key in required:
            if getattr(self, key, missing) in (missing, None):
                self._validate_required_primitive_elements()
                break
    for values, nones, needed in choices:
        try:
            found = sum(map(state.is_not, values(self), nones))
        except AttributeError:  # the library reads a missing attribute as None: let it count
            self._validate_one_of_many()
            break
        if found > 1 or (needed and not found):
            self._validate_one_of_many()
            break
    return self


class CachedImportString:
    """fhir_core's ``import_string`` with each resolved dotted path remembered.

    fhir_core resolves the class of every resource in a Bundle (``Bundle.entry.resource``, contained
    resources) from a dotted path such as ``fhir.resources.R4B.patient.Patient`` on every call.
    pydantic's ``import_string`` first tries that whole path as a module, which fails through the
    import system's finders, then imports the parent module and reads the attribute: about 10 % of
    a sample referral's validation. A path that resolved once resolves to the same object again
    (modules stay in ``sys.modules``), so the object is kept. Anything else (a non-string, a path
    that fails) goes to the library's function every time, so errors are the library's own.
    """

    def __init__(self, original: Any) -> None:
        self.original = original
        self._found: dict[str, Any] = {}

    def __call__(self, value: Any) -> Any:
        if type(value) is not str:
            return self.original(value)
        found = self._found.get(value)
        if found is None:
            found = self._found[value] = self.original(value)
        return found


# --- install / uninstall ------------------------------------------------------------------------------------


def install() -> bool:
    """Swap the fast code in if fhir_core is the version and shape checked; True if it is in effect."""
    state = _qixin_fhirspeed
    if state.reject is None:
        module = _library()
        if module is None:
            return False
        base = module.FHIRAbstractModel
        reject = base.__dict__["reject_null_complex_elements"].__func__
        after = base.__dict__["validate_after_model_construction"]
        state.base = base
        state.is_list_type = module.is_list_type  # the helpers as the library's code finds them
        state.is_primitive_type = module.is_primitive_type
        state.reject_code, state.after_code = reject.__code__, after.__code__
        state.original_reject, state.original_after = _copy(reject), _copy(after)
        setattr(module, _GLOBAL_NAME, state)
        state.reject, state.after = reject, after
        state.types_module = importlib.import_module("fhir_core.types")
        state.import_string = CachedImportString(state.types_module.import_string)
    state.reject.__code__ = reject_null_complex_elements.__code__
    state.after.__code__ = validate_after_model_construction.__code__
    # The one name fhir_core.types' validators resolve resource classes by (a module global).
    state.types_module.import_string = state.import_string
    return True


def uninstall() -> None:
    """Put fhir_core's own validator code back (``install()`` swaps the fast code in again)."""
    state = _qixin_fhirspeed
    if state.reject is not None:
        state.reject.__code__ = state.reject_code
        state.after.__code__ = state.after_code
        state.types_module.import_string = state.import_string.original


def active() -> bool:
    """Whether fhir_core's validators run the fast code now."""
    state = _qixin_fhirspeed
    return state.reject is not None and state.reject.__code__ is reject_null_complex_elements.__code__


def _library() -> Any:
    """``fhir_core.fhirabstractmodel`` if it is the version and shape checked here, else None."""
    try:
        if importlib.metadata.version("fhir-core") != FHIR_CORE_VERSION:
            return None
        from fhir_core import fhirabstractmodel
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return None
    return fhirabstractmodel if _shape_ok(fhirabstractmodel) else None


def _shape_ok(module: Any) -> bool:
    """fhir_core's two validators are the ones read for this module, and pydantic calls them."""
    base = getattr(module, "FHIRAbstractModel", None)
    if base is None:
        return False
    reject = getattr(base.__dict__.get("reject_null_complex_elements"), "__func__", None)
    after = base.__dict__.get("validate_after_model_construction")
    for func, args, names in ((reject, ("cls", "data"), _REJECT_NAMES), (after, ("self",), _AFTER_NAMES)):
        if not isinstance(func, types.FunctionType) or func.__closure__ is not None:
            return False
        code = _library_code(func)
        if code.co_varnames[: code.co_argcount] != args or code.co_kwonlyargcount or code.co_freevars:
            return False
        if func.__defaults__ or func.__kwdefaults__ or frozenset(code.co_names) != names:
            return False
    if not all(
        name in base.__dict__
        for name in ("_validate_required_primitive_elements", "_validate_one_of_many", "get_alias_mapping")
    ):
        return False
    # pydantic must call these very function objects from the compiled schemas.
    validators = base.__pydantic_decorators__.model_validators
    before_info = validators.get("reject_null_complex_elements")
    after_info = validators.get("validate_after_model_construction")
    if before_info is None or getattr(before_info.func, "__func__", None) is not reject:
        return False
    if after_info is None or after_info.func is not after:
        return False
    return getattr(module, _GLOBAL_NAME, _qixin_fhirspeed) is _qixin_fhirspeed


def _library_code(func: types.FunctionType) -> types.CodeType:
    """The library's code of one of the two functions, also while the fast code is swapped in."""
    state = _qixin_fhirspeed
    if func is state.reject and state.reject_code is not None:
        return state.reject_code
    if func is state.after and state.after_code is not None:
        return state.after_code
    return func.__code__


def _copy(func: types.FunctionType) -> types.FunctionType:
    """The same function as another object, which keeps the library's code after the swap."""
    clone = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    clone.__qualname__ = func.__qualname__
    clone.__kwdefaults__ = func.__kwdefaults__
    return clone
