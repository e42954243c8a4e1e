"""The station's one device model: components, variables, their attributes and characteristics.

Why one model: every place that reads or changes a setting — OCPP 2.0.1 GetVariables /
SetVariables / GetBaseReport / GetReport, OCPP 1.6 GetConfiguration / ChangeConfiguration, the
local API's `/device-model` view — goes through this object, so a value cannot differ between
them. The version adapters only translate names and statuses. Protocol-neutral: no `ocpp` import.

Vocabulary (OCPP 2.0.1's, because it is the richer one):
- a *component* is `name` + optional `component_instance` + optional EVSE id / connector id
  (ChargingStation, EVSE 1, Connector 1.1, OCPPCommCtrlr, ...);
- a *variable* of a component is `name` + optional `instance`
  (e.g. DeviceDataCtrlr.ItemsPerMessage[GetVariables]);
- each variable has *attributes* (Actual, Target, MinSet, MaxSet) with a mutability
  (ReadOnly / WriteOnly / ReadWrite) and *characteristics* (dataType, unit, limits, valuesList);
- a variable may name the OCPP 1.6 configuration key that maps onto it (`key16`); a few 1.6
  keys have no 2.0.1 variable and are declared `only16=True` (hidden from 2.0.1 messages).

HOW TO ADD VARIABLES (the registration API)
===========================================
1. Describe them as data, next to the code that owns their behaviour::

       from station.core.device_model import DataType, Mutability, Variable

       RESERVATION_VARIABLES = (
           Variable("ReservationCtrlr", "Enabled", DataType.BOOLEAN, Mutability.READ_WRITE, default=True),
           Variable("ReservationCtrlr", "NonEvseSpecific", DataType.BOOLEAN, default=False),
       )

   Variables every station has, whoever implements them, live in
   `station/core/standard_variables.py` (change a default there rather than re-declaring).
2. Declare and wire them on the model (`core.device_model`) when your module is built::

       model = core.device_model
       model.declare(*RESERVATION_VARIABLES)              # idempotent for identical declarations
       model.bind("ReservationCtrlr", "Enabled", apply=lambda entry, value: ...)   # runs after a change
       model.bind("EVSE", "AvailabilityState", get=lambda entry: status_of(entry.evse))  # live value
       model.set_default("OCPPCommCtrlr", "HeartbeatInterval", settings.heartbeat_seconds)

3. Read values where you need them: `model.value("OCPPCommCtrlr", "HeartbeatInterval")`
   (typed: int / float / bool / str / datetime), and change them from station code with
   `model.set(...)` (skips the mutability check: the station may change its read-only facts).
4. Watch changes: append a callable to `model.listeners`; it gets (entry, attribute, value) after
   every stored or applied change (CSMS writes and `set`), e.g. for variable monitoring. Live
   values (getters) change without notice: poll them.
5. A value its owner keeps itself (the password in the credentials file, the network profiles'
   priority): declare it `owner_stores=True` (with `owner_required=True`) and bind `apply`; a write
   then only calls `apply`, which refuses with ValueError, and reads go through `get`.

Rules the model enforces:
- writable attributes persist in the SQLite `kv` table (key `dm:...`, or `store_key` for values
  stored before the model existed) and survive restarts; read-only ones come from a getter or
  are constants;
- a write from outside (`write`) is parsed and checked against dataType, limits and valuesList,
  then persisted, then the `apply` hook runs (so e.g. a new HeartbeatInterval takes effect at
  once); `reboot_required=True` variables answer RebootRequired instead of Accepted;
- a variable declared `owner_required=True` is ReadOnly (reported so, writes refused) until its
  owner bound an `apply` hook: a setting nobody acts on is never reported as accepted;
- `secret=True` values (passwords, keys) are WriteOnly: `read` refuses them, `snapshot` masks
  them and nothing here logs a value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)

MASK = "***"


class DataType(StrEnum):
    STRING = "string"
    DECIMAL = "decimal"
    INTEGER = "integer"
    DATETIME = "dateTime"
    BOOLEAN = "boolean"
    OPTION_LIST = "OptionList"
    SEQUENCE_LIST = "SequenceList"
    MEMBER_LIST = "MemberList"


class Mutability(StrEnum):
    READ_ONLY = "ReadOnly"
    WRITE_ONLY = "WriteOnly"
    READ_WRITE = "ReadWrite"


class AttributeType(StrEnum):
    ACTUAL = "Actual"
    TARGET = "Target"
    MIN_SET = "MinSet"
    MAX_SET = "MaxSet"


class Scope(StrEnum):
    """How many instances a declaration makes: one, one per EVSE, one per connector."""

    STATION = "station"
    EVSE = "evse"
    CONNECTOR = "connector"


class Status(StrEnum):
    """Outcome of a read or write; the words are OCPP 2.0.1's (the 1.6 adapter maps them)."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    REBOOT_REQUIRED = "RebootRequired"
    UNKNOWN_COMPONENT = "UnknownComponent"
    UNKNOWN_VARIABLE = "UnknownVariable"
    NOT_SUPPORTED_ATTRIBUTE_TYPE = "NotSupportedAttributeType"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute of a variable beyond its Actual value (e.g. EVSE.Power MaxSet)."""

    type: AttributeType
    mutability: Mutability = Mutability.READ_ONLY
    default: Any = None


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable declaration, as data. `mutability` and `default` describe the Actual attribute."""

    component: str
    name: str
    data_type: DataType
    mutability: Mutability = Mutability.READ_ONLY
    default: Any = None
    instance: str | None = None
    component_instance: str | None = None
    scope: Scope = Scope.STATION
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    """For strings: the longest value accepted."""
    values_list: tuple[str, ...] | None = None
    supports_monitoring: bool = False
    reboot_required: bool = False
    """A change is stored now and takes effect after a restart (SetVariables: RebootRequired)."""
    secret: bool = False
    owner_required: bool = False
    """Writes are refused until the module that acts on the value bound an `apply` hook."""
    owner_stores: bool = False
    """The owner keeps the value (e.g. the password in its 0600 file): a write only calls its `apply`,
    which refuses with ValueError (its message goes to the CSMS); reads go through its getter."""
    key16: str | None = None
    """The OCPP 1.6 configuration key of this variable."""
    only16: bool = False
    """A 1.6 configuration key with no 2.0.1 variable: hidden from 2.0.1 messages and reports."""
    store_key: str | None = None
    """Where the Actual value was stored before the device model existed (kept for old databases).
    May contain `{evse}` / `{connector}`."""
    extra: tuple[Attribute, ...] = ()
    description: str = ""

    def attributes(self) -> tuple[Attribute, ...]:
        mutability = Mutability.WRITE_ONLY if self.secret else self.mutability
        return (Attribute(AttributeType.ACTUAL, mutability, self.default), *self.extra)

    @property
    def writable(self) -> bool:
        """Some attribute may be written (its value persists, by the model or by its owner)."""
        return any(a.mutability != Mutability.READ_ONLY for a in self.attributes())


Getter = Callable[["Entry"], Any]
Applier = Callable[["Entry", Any], None]
Validator = Callable[["Entry", Any], str | None]
"""Returns why a parsed value is refused (shown to the CSMS), or None."""
Listener = Callable[["Entry", AttributeType, Any], None]


class KeyValueStore(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...


class Invalid(ValueError):
    """A value the variable does not accept: `reason` is an OCPP reasonCode (≤ 20 characters)."""

    REASONS = ("InvalidValue", "ValueTooLow", "ValueTooHigh", "ValueOutOfRange")
    """OCPP 2.0.1 reason codes (appendix "Reason codes") a parse may give."""

    def __init__(self, reason: str, info: str) -> None:
        super().__init__(info)
        self.reason = reason
        self.info = info


@dataclass(frozen=True, slots=True)
class Result:
    """What a read or write came to; `value` is the text read (reads only)."""

    status: Status
    value: str | None = None
    reason: str | None = None
    info: str | None = None


@dataclass(eq=False)
class Entry:
    """One concrete variable of one concrete component (a declaration expanded per EVSE/connector)."""

    variable: Variable
    evse: int | None = None
    connector: int | None = None
    getters: dict[AttributeType, Getter] = field(default_factory=dict)
    apply: Applier | None = None
    validate: Validator | None = None
    defaults: dict[AttributeType, Any] = field(default_factory=dict)
    values: dict[AttributeType, Any] = field(default_factory=dict)
    """Cached values of stored attributes (and overrides that are not persisted)."""

    @property
    def component(self) -> str:
        return self.variable.component

    @property
    def name(self) -> str:
        return self.variable.name

    def attribute(self, kind: AttributeType | str) -> Attribute | None:
        return next((a for a in self.variable.attributes() if a.type == kind), None)

    def mutability(self, spec: Attribute) -> Mutability:
        """As declared, except: ReadOnly while an `owner_required` variable has no owner bound."""
        if spec.mutability != Mutability.READ_ONLY and self.variable.owner_required and self.apply is None:
            return Mutability.WRITE_ONLY if self.variable.secret else Mutability.READ_ONLY
        return spec.mutability

    @property
    def read_only(self) -> bool:
        """The Actual value cannot be changed from outside (1.6 `readonly`)."""
        spec = self.attribute(AttributeType.ACTUAL)
        return spec is None or self.mutability(spec) == Mutability.READ_ONLY

    def component_json(self) -> dict[str, Any]:
        """The component as OCPP 2.0.1 writes it (`ComponentType`)."""
        out: dict[str, Any] = {"name": self.variable.component}
        if self.variable.component_instance:
            out["instance"] = self.variable.component_instance
        if self.evse is not None:
            out["evse"] = {"id": self.evse}
            if self.connector is not None:
                out["evse"]["connectorId"] = self.connector
        return out

    def variable_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.variable.name}
        if self.variable.instance:
            out["instance"] = self.variable.instance
        return out

    def characteristics_json(self) -> dict[str, Any]:
        v = self.variable
        out: dict[str, Any] = {"dataType": v.data_type.value, "supportsMonitoring": v.supports_monitoring}
        if v.unit:
            out["unit"] = v.unit
        if v.min_limit is not None:
            out["minLimit"] = v.min_limit
        if v.max_limit is not None:
            out["maxLimit"] = v.max_limit
        if v.values_list:
            out["valuesList"] = ",".join(v.values_list)
        return out

    @property
    def path(self) -> str:
        """`Component[inst]@evse.connector/Variable[inst]`: a stable, readable name (logs, store keys)."""
        v = self.variable
        text = v.component + (f"[{v.component_instance}]" if v.component_instance else "")
        if self.evse is not None:
            text += f"@{self.evse}" + (f".{self.connector}" if self.connector is not None else "")
        return text + "/" + v.name + (f"[{v.instance}]" if v.instance else "")


# ------------------------------------------------------------------------ values
def format_value(value: Any) -> str:
    """A typed value as OCPP text (booleans lower case, whole decimals without '.0', UTC 'Z' times)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def _number_text(text: str) -> str:
    stripped = text.strip()
    if not stripped or len(stripped) > 40:
        raise Invalid("InvalidValue", "not a number")
    return stripped


def _check_limits(variable: Variable, number: float) -> None:
    if variable.min_limit is not None and number < variable.min_limit:
        raise Invalid("ValueTooLow", f"must be >= {format_value(float(variable.min_limit))}")
    if variable.max_limit is not None and number > variable.max_limit:
        raise Invalid("ValueTooHigh", f"must be <= {format_value(float(variable.max_limit))}")


def _members(variable: Variable, text: str, *, single: bool = False) -> str:
    items = [part.strip() for part in text.split(",")] if text.strip() else []
    allowed = variable.values_list
    if single and len(items) != 1:
        raise Invalid("InvalidValue", "expected one of " + ",".join(allowed or ()))
    if len(set(items)) != len(items):
        raise Invalid("InvalidValue", "a value is listed twice")
    if allowed is not None:
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise Invalid("InvalidValue", f"{unknown[0][:40]!r} is not one of " + ",".join(allowed))
    if not items and variable.data_type == DataType.SEQUENCE_LIST:
        raise Invalid("InvalidValue", "the sequence must not be empty")
    return ",".join(items)


def parse_value(variable: Variable, text: str) -> Any:
    """The typed value of `text` for `variable`; `Invalid` (with an OCPP reasonCode) if it does not fit."""
    kind = variable.data_type
    if kind == DataType.INTEGER:
        stripped = _number_text(text)
        try:
            number = int(stripped)
        except ValueError:
            raise Invalid("InvalidValue", "expected a whole number") from None
        _check_limits(variable, number)
        return number
    if kind == DataType.DECIMAL:
        try:
            number = float(_number_text(text))
        except ValueError:
            raise Invalid("InvalidValue", "expected a decimal number") from None
        if not math.isfinite(number):
            raise Invalid("InvalidValue", "expected a finite number")
        _check_limits(variable, number)
        return number
    if kind == DataType.BOOLEAN:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise Invalid("InvalidValue", "expected true or false")
        return lowered == "true"
    if kind == DataType.DATETIME:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise Invalid("InvalidValue", "expected an RFC 3339 date and time") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if kind == DataType.OPTION_LIST:
        return _members(variable, text, single=True)
    if kind in (DataType.MEMBER_LIST, DataType.SEQUENCE_LIST):
        return _members(variable, text)
    if variable.max_limit is not None and len(text) > variable.max_limit:
        raise Invalid("ValueOutOfRange", f"longer than {int(variable.max_limit)} characters")
    if variable.min_limit is not None and len(text) < variable.min_limit:
        raise Invalid("ValueOutOfRange", f"shorter than {int(variable.min_limit)} characters")
    return text


def _json_value(value: Any) -> Any:
    """How a typed value is kept in the store (JSON)."""
    return format_value(value) if isinstance(value, datetime) else value


# ------------------------------------------------------------------------- model
_ComponentKey = tuple[str, str | None, int | None, int | None]
_VariableKey = tuple[str, str | None]


def _low(text: str | None) -> str | None:
    return text.lower() if text else None


class DeviceModel:
    """All components and variables of one station, their values and their persistence."""

    def __init__(self, store: KeyValueStore, evses: Mapping[int, Iterable[int]]) -> None:
        self.store = store
        self.evses: dict[int, tuple[int, ...]] = {e: tuple(c) for e, c in evses.items()}
        self._components: dict[_ComponentKey, dict[_VariableKey, Entry]] = {}
        self._component_names: set[str] = set()
        self._by_key16: dict[str, Entry] = {}
        self._declared: dict[tuple[_ComponentKey, _VariableKey], Variable] = {}
        self.listeners: list[Listener] = []
        """Called after every change of a value (monitoring, events): (entry, attribute, new value)."""

    # ---- declaring ---------------------------------------------------------------
    def declare(self, *variables: Variable) -> None:
        """Add variables; declaring an identical variable again is a no-op, a different one an error."""
        for variable in variables:
            if variable.key16 is None and variable.only16:
                raise ValueError(f"{variable.component}.{variable.name}: only16 needs a key16")
            for evse, connector in self._places(variable.scope):
                ckey: _ComponentKey = (variable.component.lower(), _low(variable.component_instance), evse, connector)
                vkey: _VariableKey = (variable.name.lower(), _low(variable.instance))
                known = self._declared.get((ckey, vkey))
                if known is not None:
                    if known != variable:
                        raise ValueError(f"{variable.component}.{variable.name} declared twice, differently")
                    continue
                self._declared[(ckey, vkey)] = variable
                entry = Entry(variable, evse, connector)
                self._components.setdefault(ckey, {})[vkey] = entry
                if not variable.only16:
                    self._component_names.add(variable.component.lower())
                first = evse is None or (evse == min(self.evses) and connector in (None, min(self.evses[evse], default=None)))
                if variable.key16 and first:  # a per-EVSE variable's 1.6 key names the first EVSE's
                    self._by_key16.setdefault(variable.key16.lower(), entry)

    def _places(self, scope: Scope) -> list[tuple[int | None, int | None]]:
        if scope == Scope.STATION:
            return [(None, None)]
        if scope == Scope.EVSE:
            return [(e, None) for e in sorted(self.evses)]
        return [(e, c) for e in sorted(self.evses) for c in self.evses[e]]

    def _matching(self, component: str, variable: str, instance: str | None,
                  component_instance: str | None, evse: int | None) -> list[Entry]:
        found = [entry for (cname, cinst, cevse, _), variables in self._components.items()
                 if cname == component.lower() and cinst == _low(component_instance) and (evse is None or cevse == evse)
                 for (vname, vinst), entry in variables.items() if vname == variable.lower() and vinst == _low(instance)]
        if not found:
            raise KeyError(f"{component}.{variable}{f'[{instance}]' if instance else ''} is not declared")
        return found

    def bind(self, component: str, variable: str, *, instance: str | None = None, component_instance: str | None = None,
             evse: int | None = None, get: Getter | None = None, apply: Applier | None = None,
             validate: Validator | None = None, attribute: AttributeType = AttributeType.ACTUAL) -> None:
        """Attach behaviour to a declared variable (all its EVSE/connector copies unless `evse`)."""
        for entry in self._matching(component, variable, instance, component_instance, evse):
            if get is not None:
                entry.getters[attribute] = get
            if apply is not None:
                entry.apply = apply
            if validate is not None:
                entry.validate = validate

    def set_default(self, component: str, variable: str, value: Any, *, instance: str | None = None,
                    component_instance: str | None = None, evse: int | None = None,
                    attribute: AttributeType = AttributeType.ACTUAL) -> None:
        """The value used while nothing was stored (e.g. from the station's configuration file)."""
        for entry in self._matching(component, variable, instance, component_instance, evse):
            entry.defaults[attribute] = value

    # ---- finding -----------------------------------------------------------------------
    def find(self, component: str, variable: str, *, instance: str | None = None,
             component_instance: str | None = None, evse: int | None = None,
             connector: int | None = None, include16: bool = False) -> Entry | Status:
        """The entry a 2.0.1 request names (names are case-insensitive), or UnknownComponent/UnknownVariable."""
        variables = self._components.get((component.lower(), _low(component_instance), evse, connector))
        if variables is None:
            return Status.UNKNOWN_COMPONENT
        entry = variables.get((variable.lower(), _low(instance)))
        if entry is None or (entry.variable.only16 and not include16):
            if not include16 and all(e.variable.only16 for e in variables.values()):
                return Status.UNKNOWN_COMPONENT
            return Status.UNKNOWN_VARIABLE
        return entry

    def entry(self, component: str, variable: str, **where: Any) -> Entry:
        """The entry station code names; KeyError when it is not declared (a wiring bug)."""
        found = self.find(component, variable, include16=True, **where)
        if isinstance(found, Status):
            raise KeyError(f"{component}.{variable} {where or ''}: {found.value}")
        return found

    def by_key16(self, key: str) -> Entry | None:
        return self._by_key16.get(key.lower())

    def keys16(self) -> list[Entry]:
        """Every 1.6 configuration key, in declaration order."""
        return list(self._by_key16.values())

    def entries(self, *, include16: bool = False) -> Iterator[Entry]:
        """Every entry, component by component (declaration order): what a FullInventory reports."""
        for variables in self._components.values():
            for entry in variables.values():
                if include16 or not entry.variable.only16:
                    yield entry

    def knows_component(self, name: str) -> bool:
        return name.lower() in self._component_names

    # ---- values --------------------------------------------------------------------
    def _store_key(self, entry: Entry, attribute: AttributeType) -> str:
        if attribute == AttributeType.ACTUAL and entry.variable.store_key:
            return entry.variable.store_key.format(evse=entry.evse, connector=entry.connector)
        return f"dm:{entry.path}/{attribute.value}"

    def current(self, entry: Entry, attribute: AttributeType = AttributeType.ACTUAL) -> Any:
        """The typed value now: live getter, else stored/overridden value, else default. No access check."""
        getter = entry.getters.get(attribute)
        if getter is not None:
            return getter(entry)
        if attribute in entry.values:
            return entry.values[attribute]
        spec = entry.attribute(attribute)
        default = entry.defaults.get(attribute, spec.default if spec else None)
        if spec is not None and spec.mutability != Mutability.READ_ONLY:
            try:
                stored = self.store.get(self._store_key(entry, attribute), _MISSING)
            except Exception as exc:  # noqa: BLE001 — a broken store falls back to the default
                log.error("device model: stored value unreadable", variable=entry.path, error=str(exc))
                stored = _MISSING
            if stored is not _MISSING:
                try:
                    value = parse_value(entry.variable, format_value(stored))
                except Invalid:
                    log.warning("device model: stored value no longer valid; default used", variable=entry.path)
                    value = default
                entry.values[attribute] = value
                return value
        return default

    def value(self, component: str, variable: str, *, attribute: AttributeType = AttributeType.ACTUAL,
              **where: Any) -> Any:
        return self.current(self.entry(component, variable, **where), attribute)

    def get(self, component: str, variable: str, **where: Any) -> Any:
        """The Actual value (`station.core.authorization.Settings`)."""
        return self.value(component, variable, **where)

    def set(self, component: str, variable: str, value: Any, *, persist: bool = True,
            attribute: AttributeType = AttributeType.ACTUAL, **where: Any) -> None:
        """Station code changes a value (no mutability check). `persist=False`: this run only.

        Raises StoreError (from the store) when a persisted value cannot be saved.
        """
        self._commit(self.entry(component, variable, **where), attribute, value, persist=persist)

    def _commit(self, entry: Entry, attribute: AttributeType, value: Any, *, persist: bool) -> None:
        if persist:
            self.store.put(self._store_key(entry, attribute), _json_value(value))
        entry.values[attribute] = value
        if attribute == AttributeType.ACTUAL and entry.apply is not None:
            try:
                entry.apply(entry, value)
            except Exception:  # noqa: BLE001 — the value is stored; a failing hook is logged, not fatal
                log.exception("device model: applying a change failed", variable=entry.path)
        for listener in list(self.listeners):
            try:
                listener(entry, attribute, value)
            except Exception:  # noqa: BLE001
                log.exception("device model: change listener failed", variable=entry.path)

    # ---- reads and writes from outside (CSMS) ----------------------------------------
    def read(self, entry: Entry, attribute: AttributeType | str = AttributeType.ACTUAL) -> Result:
        """A CSMS read: WriteOnly and secret values are refused, values are text."""
        spec = entry.attribute(attribute)
        if spec is None:
            return Result(Status.NOT_SUPPORTED_ATTRIBUTE_TYPE, reason="UnsupportedParam",
                          info=f"{entry.variable.name} has no {attribute} attribute")
        if spec.mutability == Mutability.WRITE_ONLY or entry.variable.secret:
            return Result(Status.REJECTED, reason="WriteOnly", info="this value can be written, not read")
        try:
            value = self.current(entry, spec.type)
        except Exception as exc:  # noqa: BLE001 — a broken getter refuses one read, not the message
            log.exception("device model: reading a value failed", variable=entry.path)
            return Result(Status.REJECTED, reason="InternalError", info=exc.__class__.__name__)
        return Result(Status.ACCEPTED, value=format_value(value))

    def write(self, entry: Entry, text: str, attribute: AttributeType | str = AttributeType.ACTUAL) -> Result:
        """A CSMS write: checked, persisted, applied. Never logs the value of a secret."""
        spec = entry.attribute(attribute)
        if spec is None:
            return Result(Status.NOT_SUPPORTED_ATTRIBUTE_TYPE, reason="UnsupportedParam",
                          info=f"{entry.variable.name} has no {attribute} attribute")
        if entry.variable.owner_required and entry.apply is None:
            return Result(Status.REJECTED, reason="ReadOnly", info="not changeable on this station (yet)")
        if spec.mutability == Mutability.READ_ONLY:
            return Result(Status.REJECTED, reason="ReadOnly", info="this value cannot be changed")
        try:
            value = parse_value(entry.variable, text)
            why = entry.validate(entry, value) if entry.validate is not None else None
        except Invalid as exc:
            return Result(Status.REJECTED, reason=exc.reason, info=exc.info)
        if why:
            return Result(Status.REJECTED, reason="InvalidValue", info=why)
        if entry.variable.owner_stores:
            return self._hand_over(entry, spec.type, value)
        try:
            self._commit(entry, spec.type, value, persist=True)
        except Exception as exc:  # noqa: BLE001 — StoreError: the disk refused; nothing changed
            log.error("device model: value not saved", variable=entry.path, error=exc.__class__.__name__)
            return Result(Status.REJECTED, reason="InternalError", info="the value could not be saved")
        log.info("device model: value changed", variable=entry.path, attribute=spec.type.value,
                 value=MASK if entry.variable.secret else format_value(value)[:100])
        if entry.variable.reboot_required:
            return Result(Status.REBOOT_REQUIRED)
        return Result(Status.ACCEPTED)

    def _hand_over(self, entry: Entry, attribute: AttributeType, value: Any) -> Result:
        """An owner-stored value: the owner applies (and keeps) it, or says why not."""
        assert entry.apply is not None  # owner_stores variables are owner_required too
        try:
            entry.apply(entry, value)
        except ValueError as exc:
            return Result(Status.REJECTED, reason="InvalidValue", info=str(exc)[:200])
        except Exception as exc:  # noqa: BLE001 — the owner failed: nothing changed
            log.error("device model: owner could not apply a value", variable=entry.path, error=exc.__class__.__name__)
            return Result(Status.REJECTED, reason="InternalError", info="the value could not be applied")
        log.info("device model: value changed", variable=entry.path, attribute=attribute.value,
                 value=MASK if entry.variable.secret else format_value(value)[:100])
        for listener in list(self.listeners):
            try:
                listener(entry, attribute, value)
            except Exception:  # noqa: BLE001
                log.exception("device model: change listener failed", variable=entry.path)
        return Result(Status.REBOOT_REQUIRED if entry.variable.reboot_required else Status.ACCEPTED)

    # ---- views -------------------------------------------------------------------------
    def snapshot(self, *, include16: bool = True) -> list[dict[str, Any]]:
        """Every variable with its attributes and characteristics, secrets masked (IPC / API view)."""
        rows = []
        for entry in self.entries(include16=include16):
            attributes = []
            for spec in entry.variable.attributes():
                mutability = entry.mutability(spec)
                row: dict[str, Any] = {"type": spec.type.value, "mutability": mutability.value,
                                       "persistent": entry.variable.writable}
                if entry.variable.secret or spec.mutability == Mutability.WRITE_ONLY:
                    row["value"] = MASK
                else:
                    result = self.read(entry, spec.type)
                    row["value"] = result.value if result.status == Status.ACCEPTED else None
                attributes.append(row)
            rows.append({
                "component": entry.component_json(), "variable": entry.variable_json(),
                "attributes": attributes, "characteristics": entry.characteristics_json(),
                "key16": entry.variable.key16, "only16": entry.variable.only16,
                "reboot_required": entry.variable.reboot_required,
            })
        return rows


_MISSING = object()
