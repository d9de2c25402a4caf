"""driftline's state format: explicit, versioned, and safe to read from Kafka.

A state record is a tree of plain values (msgpack) describing driftline's own objects: numbers,
strings, containers, numpy arrays as dtype + shape + raw bytes, and objects of *allowed* classes as
their class name and attribute values. Reading one never unpickles and never runs code from the
record: a class is looked up by name only among driftline's own modules (``detectors``,
``service``) and river's ADWIN, created without calling its constructor, and given the recorded
attributes. Anything else (a closure, an unknown class, an object array) is refused, on write and
on read.

Shared references and cycles keep their identity (each container or object is numbered the first
time it is written; later occurrences refer to the number). Objects that come from the current
configuration (a model's settings and its profile) are written as *externals*, by their path
inside those roots, and resolved against the current ones on read.

``STATE_FORMAT`` names the layout of the persisted classes. A record of another format is refused
with a clear reason, and the task or model it held starts fresh. ``tests/unit/test_state_format.py``
pins the attribute layout of every class a monitor persists, so that a change to one cannot ship
without bumping the format.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import types
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import numpy as np
import zstandard
from pydantic import BaseModel

from driftline.service.errors import SnapshotError

STATE_FORMAT = 8
_MAGIC = b"DLS3"  # the zstd container (formats 3 and later)
_FORMAT_2_MAGIC = b"DLS2"  # zlib-compressed records (format 2); DLS1 were pickles
# zstd, not zlib: a 20-feature model's record costs 0.7 ms to compress instead of 6 ms, at the
# same size (about 110 KB), and a state write covers every model that changed.
_ZSTD_LEVEL = 3
_SIGNED, _UNSIGNED = b"S", b"U"
_MAC_SIZE = hashlib.sha256().digest_size
_ALLOWED_MODULES = ("driftline.detectors.", "driftline.service.")
# Functions referenced by persisted objects may also live in these libraries.
_ALLOWED_FUNCTION_MODULES = (*_ALLOWED_MODULES, "numpy", "math", "operator", "river.")
_ADWIN_CLASS = "river.drift.adwin:ADWIN"
_ADWIN_HELPER = "river._river_rust.drift:AdaptiveWindowing"

# Tags: every list in an encoded tree starts with one, so a tree is unambiguous.
(
    _LIST,
    _TUPLE,
    _DICT,
    _SET,
    _FROZENSET,
    _DEQUE,
    _ARRAY,
    _SCALAR,
    _OBJECT,
    _REF,
    _EXTERNAL,
    _FUNCTION,
    _METHOD,
    _PARTIAL,
    _MODEL,
    _HELPER,
    _NAMEDTUPLE,
    _COUNTER,
    _ORDERED,
) = range(19)

_PRIMITIVES = (str, int, float, bool, bytes, type(None))
# numpy's public functions are dispatcher objects, its ufuncs another type.
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, np.ufunc, type(np.clip))


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_allowed_class(name: str) -> bool:
    return name.startswith(_ALLOWED_MODULES) or name in (_ADWIN_CLASS, _ADWIN_HELPER)


def _resolve(name: str, allowed: tuple[str, ...]) -> Any:
    module_name, _, qualname = name.partition(":")
    if not (module_name + ".").startswith(allowed) and name not in (_ADWIN_CLASS, _ADWIN_HELPER):
        raise SnapshotError(f"state names {name!r}, which is not one of driftline's own")
    if "<locals>" in qualname or not qualname:
        raise SnapshotError(f"state names {name!r}, which cannot be looked up")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SnapshotError(f"state names {name!r}, which this version does not have") from exc
    return target


def _slots(cls: type) -> Iterator[str]:
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__"):
                yield slot


def _attributes(obj: Any) -> dict[str, Any]:
    state: dict[str, Any] = dict(getattr(obj, "__dict__", {}))
    for slot in _slots(type(obj)):
        try:
            state[slot] = getattr(obj, slot)
        except AttributeError:
            continue  # an unset slot stays unset
    return state


def external_paths(roots: Mapping[str, Any]) -> dict[int, tuple[str, Any]]:
    """Every non-primitive object reachable from ``roots``, by ``id``: its path and itself."""
    found: dict[int, tuple[str, Any]] = {}

    def visit(obj: Any, path: str) -> None:
        if isinstance(obj, _PRIMITIVES) or id(obj) in found:
            return
        found[id(obj)] = (path, obj)
        if isinstance(obj, BaseModel):
            for field in type(obj).model_fields:
                visit(getattr(obj, field), f"{path}.{field}")
        elif isinstance(obj, dict):
            for key, value in obj.items():
                if isinstance(key, str):
                    visit(value, f"{path}[{key}]")
        elif isinstance(obj, list | tuple):
            for i, value in enumerate(obj):
                visit(value, f"{path}[{i}]")
        elif _name(type(obj)).startswith(_ALLOWED_MODULES):
            for attribute, value in sorted(_attributes(obj).items()):
                visit(value, f"{path}.{attribute}")

    for name, root in sorted(roots.items()):
        if root is not None:
            visit(root, name)
    return found


class _Writer:
    def __init__(self, externals: Mapping[str, Any]) -> None:
        self._memo: dict[int, int] = {}
        self._keep: list[Any] = []  # memoized objects stay alive, so ids stay unique
        self._externals = {key: path for key, (path, _) in external_paths(externals).items()}

    def _number(self, obj: Any) -> None:
        self._memo[id(obj)] = len(self._memo)
        self._keep.append(obj)

    def write(self, obj: Any) -> Any:
        if isinstance(obj, _PRIMITIVES) and type(obj) in _PRIMITIVES:
            return obj
        key = id(obj)
        if key in self._memo:
            return [_REF, self._memo[key]]
        if key in self._externals:
            return [_EXTERNAL, self._externals[key]]
        cls = type(obj)
        self._number(obj)
        write = self.write
        if cls is list:
            return [_LIST, *(write(v) for v in obj)]
        if cls is dict:
            return [_DICT, *(x for k, v in obj.items() for x in (write(k), write(v)))]
        if cls is tuple:
            return [_TUPLE, *(write(v) for v in obj)]
        if cls is set or cls is frozenset:
            # Iteration order: the reader numbers what it reads in the order it was written.
            return [_SET if cls is set else _FROZENSET, *(write(v) for v in obj)]
        if cls is deque:
            return [_DEQUE, obj.maxlen, *(write(v) for v in obj)]
        if cls is Counter or cls is OrderedDict:
            tag = _COUNTER if cls is Counter else _ORDERED
            return [tag, *(x for k, v in obj.items() for x in (write(k), write(v)))]
        if cls is np.ndarray:
            if obj.dtype.hasobject:
                raise SnapshotError("an object array cannot be persisted")
            data = np.ascontiguousarray(obj).tobytes()
            return [_ARRAY, obj.dtype.str, list(obj.shape), data, bool(obj.flags.writeable)]
        if isinstance(obj, np.generic):
            if obj.dtype.hasobject:
                raise SnapshotError("an object scalar cannot be persisted")
            return [_SCALAR, obj.dtype.str, obj.tobytes()]
        if cls in _FUNCTIONS:
            name = f"{obj.__module__ or 'numpy'}:{getattr(obj, '__qualname__', obj.__name__)}"
            if not name.startswith(_ALLOWED_FUNCTION_MODULES) or "<locals>" in name:
                raise SnapshotError(f"the function {name} cannot be persisted")
            return [_FUNCTION, name]
        if cls is types.MethodType:
            return [_METHOD, write(obj.__self__), obj.__func__.__name__]
        if cls is functools.partial:
            return [_PARTIAL, write(obj.func), write(obj.args), write(obj.keywords)]
        name = _name(cls)
        if isinstance(obj, BaseModel) and _is_allowed_class(name):
            return [_MODEL, name, obj.model_dump(mode="json")]
        if name == _ADWIN_HELPER:
            _, args, *_ = obj.__reduce_ex__(2)
            if not all(type(a) in (int, float) for a in args[1:]):
                raise SnapshotError(f"an {name} with unexpected parameters cannot be persisted")
            return [_HELPER, name, list(args[1:]), obj.__getstate__()]
        if not _is_allowed_class(name):
            raise SnapshotError(f"an object of {name} cannot be persisted")
        if isinstance(obj, tuple) and hasattr(cls, "_fields"):
            return [_NAMEDTUPLE, name, *(write(v) for v in obj)]
        state = _attributes(obj)
        return [_OBJECT, name, *(x for k in sorted(state) for x in (k, write(state[k])))]


class _Reader:
    def __init__(self, externals: Mapping[str, Any]) -> None:
        self._objects: list[Any] = []
        self._externals = {path: obj for path, obj in external_paths(externals).values()}

    def _reserve(self, obj: Any = None) -> int:
        self._objects.append(obj)
        return len(self._objects) - 1

    def read(self, node: Any) -> Any:
        if not isinstance(node, list):
            return node
        if not node:
            raise SnapshotError("malformed state: an empty node")
        tag, rest = node[0], node[1:]
        read = self.read
        if tag == _REF:
            obj = self._objects[rest[0]]
            if obj is _PENDING:
                raise SnapshotError("malformed state: a cycle through an immutable value")
            return obj
        if tag == _EXTERNAL:
            try:
                return self._externals[rest[0]]
            except KeyError:
                raise SnapshotError(f"state refers to {rest[0]}, which is not configured") from None
        if tag in (_LIST, _DICT, _SET, _COUNTER, _ORDERED):
            empty: Any = {_LIST: list, _DICT: dict, _SET: set, _COUNTER: Counter}.get(
                tag, OrderedDict
            )()
            self._reserve(empty)
            if tag == _LIST:
                empty.extend(read(v) for v in rest)
            elif tag == _SET:
                empty.update(read(v) for v in rest)
            else:
                for i in range(0, len(rest), 2):
                    key = read(rest[i])  # before the value: the order they were numbered in
                    empty[key] = read(rest[i + 1])
            return empty
        if tag == _DEQUE:
            ring: deque[Any] = deque(maxlen=rest[0])
            self._reserve(ring)
            ring.extend(read(v) for v in rest[1:])
            return ring
        if tag == _OBJECT:
            cls = _resolve(rest[0], _ALLOWED_MODULES)
            if not isinstance(cls, type) or isinstance(cls, type(BaseModel)):
                raise SnapshotError(f"state names {rest[0]!r}, which is not a plain class")
            obj = object.__new__(cls)
            self._reserve(obj)
            for i in range(1, len(rest), 2):
                object.__setattr__(obj, rest[i], read(rest[i + 1]))
            return obj
        # The rest are immutable: built once their parts are.
        index = self._reserve(_PENDING)
        value = self._immutable(tag, rest)
        self._objects[index] = value
        return value

    def _immutable(self, tag: int, rest: list[Any]) -> Any:
        read = self.read
        if tag == _TUPLE:
            return tuple(read(v) for v in rest)
        if tag == _FROZENSET:
            return frozenset(read(v) for v in rest)
        if tag == _ARRAY:
            dtype, shape, data, writeable = rest
            array = np.frombuffer(data, dtype=np.dtype(dtype))
            if array.dtype.hasobject:
                raise SnapshotError("malformed state: an object array")
            array = array.reshape(shape)
            return array.copy() if writeable else array
        if tag == _SCALAR:
            dtype = np.dtype(rest[0])
            if dtype.hasobject:
                raise SnapshotError("malformed state: an object scalar")
            return np.frombuffer(rest[1], dtype=dtype)[0]
        if tag == _FUNCTION:
            function = _resolve(rest[0], _ALLOWED_FUNCTION_MODULES)
            if not callable(function) or isinstance(function, type):
                raise SnapshotError(f"state names {rest[0]!r}, which is not a function")
            return function
        if tag == _METHOD:
            owner = read(rest[0])
            if not _is_allowed_class(_name(type(owner))):
                raise SnapshotError("malformed state: a method of a foreign object")
            return getattr(owner, rest[1])
        if tag == _PARTIAL:
            return functools.partial(read(rest[0]), *read(rest[1]), **read(rest[2]))
        if tag == _MODEL:
            cls = _resolve(rest[0], _ALLOWED_MODULES)
            if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
                raise SnapshotError(f"state names {rest[0]!r}, which is not a settings model")
            return cls.model_validate(rest[1])
        if tag == _HELPER:
            if not all(type(a) in (int, float) for a in rest[1]):
                raise SnapshotError("malformed state: ADWIN parameters")
            helper = _resolve(_ADWIN_HELPER, ())(*rest[1])
            helper.__setstate__(rest[2])
            return helper
        if tag == _NAMEDTUPLE:
            cls = _resolve(rest[0], _ALLOWED_MODULES)
            if not (isinstance(cls, type) and issubclass(cls, tuple)):
                raise SnapshotError(f"state names {rest[0]!r}, which is not a named tuple")
            return tuple.__new__(cls, [read(v) for v in rest[1:]])
        raise SnapshotError(f"malformed state: unknown tag {tag!r}")


_PENDING = object()


def to_tree(obj: Any, externals: Mapping[str, Any] | None = None) -> Any:
    """``obj`` as a tree of plain values; ``externals`` (name -> root object) are referred to."""
    return _Writer(externals or {}).write(obj)


def from_tree(tree: Any, externals: Mapping[str, Any] | None = None) -> Any:
    """The object a tree describes; external references resolve against ``externals``."""
    try:
        return _Reader(externals or {}).read(tree)
    except SnapshotError:
        raise
    except Exception as exc:  # a malformed record: whatever it broke, it is refused
        raise SnapshotError(f"malformed state: {type(exc).__name__}: {exc}") from exc


class StateCodec:
    """State records as bytes: magic, signed or not, [HMAC-SHA256], zstd(msgpack(document)).

    With a key, records are signed and only records that verify are read: an unsigned or tampered
    record is refused. Without one, records are written unsigned, and a signed record is refused
    (its signature cannot be checked).
    """

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) < 16:
            raise ValueError("the state HMAC key must have at least 16 bytes")
        self._key = key
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._decompressor = zstandard.ZstdDecompressor()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    @property
    def signed(self) -> bool:
        return self._key is not None

    def encode(self, document: dict[str, Any]) -> bytes:
        try:
            packed = self._encoder.encode({**document, "format": STATE_FORMAT})
        except (TypeError, OverflowError) as exc:
            raise SnapshotError(f"state cannot be written: {exc}") from exc
        body = self._compressor.compress(packed)
        if self._key is None:
            return _MAGIC + _UNSIGNED + body
        return _MAGIC + _SIGNED + hmac.new(self._key, body, hashlib.sha256).digest() + body

    def decode(self, data: bytes) -> dict[str, Any]:
        if data.startswith(_FORMAT_2_MAGIC):
            raise SnapshotError(
                "state format 2 or older (written by another driftline version); it starts fresh"
            )
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 1:
            raise SnapshotError("not a driftline state record (an old pickled snapshot?)")
        mode, rest = data[len(_MAGIC) : len(_MAGIC) + 1], data[len(_MAGIC) + 1 :]
        if mode == _SIGNED:
            if self._key is None:
                raise SnapshotError("the record is signed and state.hmac_key is not set")
            mac, body = rest[:_MAC_SIZE], rest[_MAC_SIZE:]
            expected = hmac.new(self._key, body, hashlib.sha256).digest()
            if not hmac.compare_digest(mac, expected):
                raise SnapshotError("state signature does not verify (wrong key or tampered)")
        elif mode == _UNSIGNED:
            if self._key is not None:
                raise SnapshotError("the record is unsigned and state.hmac_key is set")
            body = rest
        else:
            raise SnapshotError("not a driftline state record")
        try:
            document = self._decoder.decode(self._decompressor.decompress(body))
        except (zstandard.ZstdError, msgspec.DecodeError) as exc:
            raise SnapshotError(f"malformed state record: {exc}") from exc
        if not isinstance(document, dict):
            raise SnapshotError("malformed state record: not a document")
        version = document.get("format")
        if version != STATE_FORMAT:
            raise SnapshotError(
                f"state format {version} is not {STATE_FORMAT} (written by another driftline "
                "version); it starts fresh"
            )
        return document


def digest(obj: Any) -> str:
    """A stable digest of an object's persisted form (settings, profiles)."""
    tree = to_tree(obj)
    return hashlib.sha256(msgspec.msgpack.encode(tree)).hexdigest()[:32]
