"""Checkpoints of a session's variables, made and read inside the sandbox, never by the host.

After each cell the variables the cell could have changed are pickled (cloudpickle, protocol 5,
large buffers out of band: a DataFrame's arrays are written without a copy), one *piece* per
variable, and sent to the host, which stores the bytes without reading them. A fresh session of
the same conversation gets the pieces back as read-only files and loads them here.

Which variables are written again (no hashing: hashing 100 MB costs more than the 5 ms a cell
that changes nothing may spend here):
- every name that appears in the cell's code, plus the globals used by the session's own
  functions and classes that the code mentions (transitively): a cell that touches a variable
  does so through a name it mentions or a function of the session;
- every name bound to another object than at the last checkpoint (new, or rebound by any route);
- every variable whose piece refers to one of those: a piece stores another variable's object as
  a reference to that name, so aliases (``b = a``, ``d = {"t": df}``) stay aliases when restored;
- every variable whose piece the host no longer holds (removed to make room, expired);
- every variable, when the code mentions exec, eval, globals, vars, locals, __import__, setattr,
  __dict__ or sys.modules (it can reach any name).
Objects shared by two variables below the top level are restored as two copies. Modules are kept
as the imports that bring them back; open files, connections, generators and whatever else does
not pickle are named and not kept.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import re
import struct
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

import protocol

MAGIC = b"LBCKPT1\n"
SESSION_PIECE = "+session"  # imports and what was not kept (not an identifier: never a variable)
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
MAX_VARIABLES = 500  # pieces per session; the host allows as many
SMALL_PIECE = 1 << 20  # pieces up to this size are compared with the last one sent
UNCHANGED = "\0unchanged"
REACH_ALL = {
    "exec",
    "eval",
    "globals",
    "vars",
    "locals",
    "__import__",
    "setattr",
    "delattr",
    "__dict__",
    "modules",
}
NOT_KEPT_TYPES = (io.IOBase, types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_HEADER = struct.Struct(">IQ")


class _Namespace:
    """Stands for the session's namespace in a pickle: a restored function's globals are the
    live namespace, not a copy frozen at save time."""


NAMESPACE = _Namespace()


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", None) else f"{module}.{kind.__qualname__}"


class _Pickler:
    """cloudpickle with references: another variable's object becomes its name."""

    def __init__(self, names: dict[int, str], fixed: dict[int, str], namespace: dict) -> None:
        import cloudpickle

        outer = self

        class Pickler(cloudpickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                if obj is NAMESPACE:
                    return ("namespace",)
                key = id(obj)
                if key in fixed:
                    return ("kernel", fixed[key])
                name = names.get(key)
                if name is None or name == outer.top:
                    return None
                outer.refs.add(name)
                return ("var", name)

        self.cls = Pickler
        self.namespace = namespace
        self.top = ""
        self.refs: set[str] = set()

    def dumps(self, name: str, value: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
        """The pickle of one variable and its out-of-band buffers."""
        self.top, self.refs = name, set()
        buffers: list[pickle.PickleBuffer] = []
        stream = io.BytesIO()
        pickler = self.cls(stream, protocol=5, buffer_callback=buffers.append)
        pickler.globals_ref[id(self.namespace)] = NAMESPACE
        pickler.dump(value)
        return stream.getvalue(), buffers


class Checkpoints:
    """A session's checkpoint: what was saved, and the pieces that save and restore it."""

    def __init__(self, channel: Any, namespace: dict, kernel_names: Iterable[str]) -> None:
        self.channel = channel
        self.namespace = namespace
        self.kernel_names = set(kernel_names)
        self.saved: dict[str, tuple[int, frozenset[str], int]] = {}  # name → id, refs, size
        self.imports: dict[str, str] = {}
        self.not_kept: dict[str, str] = {}  # name → why
        self.digests: dict[str, bytes] = {}  # name → hash of its small piece as last sent
        self.refused: dict[str, int] = {}  # name → id of the value not kept (not tried again)
        self.announced: set[tuple[str, str]] = set()
        self.restored: dict | None = None

    # Restore ----------------------------------------------------------------------------
    def restore(self, order: protocol.CheckpointOrder | None) -> None:
        """Load the pieces the host put in the files folder (a fresh session's first cell)."""
        self.restored = None
        if order is None or not order.restore:
            return
        started = time.perf_counter()
        pieces = order.restore
        loaded: dict[str, Any] = {}
        failed: dict[str, str] = {}
        meta: dict = {}
        if SESSION_PIECE in pieces:
            try:
                with open(pieces[SESSION_PIECE], "rb") as handle:
                    meta = json.loads(handle.read(protocol.MAX_JSON))
            except (OSError, ValueError) as exc:
                failed[SESSION_PIECE] = type(exc).__name__
        loading: set[str] = set()
        refs_of: dict[str, set[str]] = {}

        def load(name: str) -> Any:
            if name in loaded:
                return loaded[name]
            if name in loading:
                raise ValueError(f"{name} refers back to itself through other variables")
            if name not in pieces:
                raise KeyError(f"{name} was not saved")
            loading.add(name)
            refs_of[name] = set()
            try:
                loaded[name] = self._load_piece(pieces[name], name, load, refs_of[name])
            finally:
                loading.discard(name)
            return loaded[name]

        try:
            for name in sorted(n for n in pieces if n != SESSION_PIECE):
                try:
                    self.namespace[name] = load(name)
                except Exception as exc:  # noqa: BLE001 - one variable's failure is reported
                    failed[name] = f"{type(exc).__name__}: {exc}"[:200]
            for name, module in (meta.get("imports") or {}).items():
                try:
                    import importlib

                    self.namespace[name] = importlib.import_module(module)
                    self.imports[name] = module
                except Exception as exc:  # noqa: BLE001
                    failed[name] = f"import {module} failed: {type(exc).__name__}"
        except KeyboardInterrupt:
            failed["(rest)"] = "the restore was interrupted"
        for name, value in loaded.items():
            if name in self.namespace and self.namespace[name] is value:
                size = _size(pieces[name])
                self.saved[name] = (id(value), frozenset(refs_of.get(name, ())), size)
        not_kept = {str(k): str(v) for k, v in (meta.get("not_kept") or {}).items()}
        self.not_kept = dict(not_kept)
        self.announced = set(not_kept.items())
        self.restored = {
            "names": sorted([*(n for n in loaded if n in self.saved), *self.imports])[:1000],
            "failed": [{"name": k[:200], "why": v[:300]} for k, v in sorted(failed.items())][:100],
            "not_kept": [{"name": k[:200], "why": v[:300]} for k, v in sorted(not_kept.items())][
                :100
            ],
            "seconds": time.perf_counter() - started,
        }

    def _load_piece(self, path: str, name: str, load: Callable[[str], Any], refs: set[str]) -> Any:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = bytearray(size)
            handle.readinto(data)
        view = memoryview(data)
        if bytes(view[: len(MAGIC)]) != MAGIC:
            raise ValueError("not a checkpoint piece")
        count, main = _HEADER.unpack_from(view, len(MAGIC))
        at = len(MAGIC) + _HEADER.size
        sizes = struct.unpack_from(f">{count}Q", view, at)
        at += 8 * count
        stream, at = view[at : at + main], at + main
        buffers = []
        for length in sizes:
            buffers.append(view[at : at + length])
            at += length
        unpickler = pickle.Unpickler(io.BytesIO(stream), buffers=buffers)
        namespace, kernel_names = self.namespace, self.kernel_names

        def persistent_load(pid: Any) -> Any:
            if pid == ("namespace",):
                return namespace
            if pid[0] == "kernel" and pid[1] in kernel_names:
                return namespace[pid[1]]
            if pid[0] == "var":
                refs.add(pid[1])
                return load(pid[1])
            raise pickle.UnpicklingError("an unknown reference")

        unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
        return unpickler.load()

    # Save -------------------------------------------------------------------------------
    def save(self, order: protocol.CheckpointOrder | None, code: str, outputs: Any) -> dict | None:
        """Send the pieces of the variables this cell could have changed; the report for the
        result (restored, saved, dropped, newly not kept)."""
        if order is None:
            return None
        started = time.perf_counter()
        cap = order.cap
        held = set(order.held)
        current = self._variables()
        dirty = self._dirty(code, current, held)
        values = {n: v for n, v in current.items() if not isinstance(v, types.ModuleType)}
        imports = {
            n: str(v.__name__)
            for n, v in current.items()
            if isinstance(v, types.ModuleType) and VARIABLE.fullmatch(n)
        }
        not_kept = {
            n: why
            for n, why in self.not_kept.items()
            if n in values and n not in dirty and self.refused.get(n) == id(values[n])
        }
        for name in list(values):
            reason = self._refusal(name, values[name])
            if reason:
                not_kept[name] = reason
                dirty.discard(name)
        saveable = {n for n in values if n not in not_kept}
        names: dict[int, str] = {}
        for name in sorted(saveable):  # the first of several names of one object holds it
            names.setdefault(id(values[name]), name)
        fixed = {id(self.namespace[n]): n for n in self.kernel_names if n in self.namespace}
        pickler = _Pickler(names, fixed, self.namespace)
        total = sum(size for n, (_, _, size) in self.saved.items() if n in saveable)
        sent: list[str] = []
        queue = sorted(dirty & saveable)
        done: set[str] = set()
        try:
            while queue:
                name = queue.pop(0)
                if name in done:
                    continue
                done.add(name)
                old = self.saved.get(name, (0, frozenset(), 0))[2]
                why = self._send(name, values[name], pickler, outputs, cap, total, held)
                if why == UNCHANGED:
                    why = None
                elif why is None:
                    sent.append(name)
                if why:
                    not_kept[name] = why
                    self.saved.pop(name, None)
                    total -= old
                    continue
                entry = self.saved[name]
                total += entry[2] - old
                queue += sorted(r for r in entry[1] if r not in done and r in saveable)
        except KeyboardInterrupt:
            not_kept.update({n: "the checkpoint was interrupted" for n in queue if n not in done})
        # Every piece that no longer stands for a kept variable goes: deleted or not kept now
        # (its old piece would come back as if current), or held but never known here (a
        # restore that failed).
        kept = {n for n in saveable if n not in not_kept and n in self.saved}
        known = set(self.saved) | {n for n in held if VARIABLE.fullmatch(n)}
        dropped = sorted(known - kept)
        self.saved = {n: e for n, e in self.saved.items() if n in kept}
        self.digests = {n: d for n, d in self.digests.items() if n in kept}
        self.refused = {n: id(values[n]) for n in not_kept}
        changed = imports != self.imports or not_kept != self.not_kept
        if changed or (SESSION_PIECE not in held and (imports or not_kept)):
            self.imports, self.not_kept = imports, not_kept
            meta = json.dumps({"imports": imports, "not_kept": not_kept}).encode()
            send_piece(self.channel, SESSION_PIECE, io.BytesIO(meta).read, len(meta))
            sent.append(SESSION_PIECE)
        news = [(n, w) for n, w in sorted(not_kept.items()) if (n, w) not in self.announced]
        self.announced = set(not_kept.items())
        report = {
            "saved": sent[: MAX_VARIABLES + 1],
            "dropped": dropped[:MAX_VARIABLES],
            "not_kept": [{"name": n[:200], "why": w[:300]} for n, w in news][:100],
            "bytes": total,
            "seconds": time.perf_counter() - started,
            "restored": self.restored,
        }
        self.restored = None
        return report

    def _variables(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in self.namespace.items()
            if not (name.startswith("__") and name.endswith("__")) and name not in self.kernel_names
        }

    def _dirty(self, code: str, current: dict[str, Any], held: set[str]) -> set[str]:
        mentioned = _names(code)
        if mentioned & REACH_ALL:
            return set(current)
        dirty = {n for n in mentioned if n in current}
        dirty |= self._reached(dirty, current)
        for name, value in current.items():
            entry = self.saved.get(name)
            if self.refused.get(name) == id(value) and name not in dirty:
                continue  # not kept, and unchanged: not tried again
            if entry is None or entry[0] != id(value) or name not in held:
                dirty.add(name)
        grew = True
        while grew:  # a piece referring to a changed name is written again
            grew = False
            for name, (_, refs, _) in self.saved.items():
                if name not in dirty and any(r in dirty or r not in current for r in refs):
                    dirty.add(name)
                    grew = True
        return dirty

    @staticmethod
    def _reached(start: set[str], current: dict[str, Any]) -> set[str]:
        """The globals the session's own functions and classes among ``start`` use."""
        found: set[str] = set()
        todo = list(start)
        while todo:
            value = current.get(todo.pop())
            for code in _codes(value):
                for name in _code_names(code):
                    if name in current and name not in found and name not in start:
                        found.add(name)
                        todo.append(name)
        return found

    def _refusal(self, name: str, value: Any) -> str | None:
        if not VARIABLE.fullmatch(name):
            return "its name is not a plain ASCII identifier"
        if isinstance(value, NOT_KEPT_TYPES):
            return _type_name(value)
        if len(self.saved) >= MAX_VARIABLES and name not in self.saved:
            return f"over the {MAX_VARIABLES} variables a checkpoint keeps"
        return None

    def _send(
        self,
        name: str,
        value: Any,
        pickler: _Pickler,
        outputs: Any,
        cap: int,
        total: int,
        held: set[str],
    ) -> str | None:
        """Pickle and send one variable; why it was not kept, UNCHANGED (a small piece whose
        bytes the host holds already: not sent again), or None."""
        try:
            stream, buffers = pickler.dumps(name, value)
            raws = [b.raw() for b in buffers]
        except KeyboardInterrupt:
            raise
        except MemoryError:
            return f"{_type_name(value)}: out of memory while saving it"
        except BaseException:  # noqa: BLE001 - whatever does not pickle is named
            return _type_name(value)[:200]
        head = MAGIC + _HEADER.pack(len(raws), len(stream))
        head += struct.pack(f">{len(raws)}Q", *(len(r) for r in raws))
        parts = [memoryview(head), memoryview(stream), *raws]
        size = sum(p.nbytes for p in parts)
        digest = None
        if size <= SMALL_PIECE:  # hashing a small piece costs less than storing it again
            hashed = hashlib.blake2b(digest_size=16)
            for part in parts:
                hashed.update(part)
            digest = hashed.digest()
            if name in held and name in self.saved and self.digests.get(name) == digest:
                self.saved[name] = (id(value), frozenset(pickler.refs), size)
                return UNCHANGED
        old = self.saved.get(name, (0, frozenset(), 0))[2]
        if total - old + size > cap:
            return f"{_type_name(value)}: over the {cap // 2**20} MiB checkpoint limit"
        if outputs.used + size > outputs.budget:
            return f"{_type_name(value)}: over the bytes one execution may return"
        send_piece(self.channel, name, _Reader(parts).read, size)
        outputs.used += size
        self.saved[name] = (id(value), frozenset(pickler.refs), size)
        self.digests.pop(name, None)
        if digest is not None:
            self.digests[name] = digest
        return None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class _Reader:
    """Reads a list of buffers as one stream, without joining them."""

    def __init__(self, parts: list[memoryview]) -> None:
        self.parts = [p.cast("B") for p in parts if p.nbytes]
        self.at = 0

    def read(self, size: int) -> bytes:
        while self.parts and self.at >= self.parts[0].nbytes:
            self.parts.pop(0)
            self.at = 0
        if not self.parts:
            return b""
        chunk = self.parts[0][self.at : self.at + size]
        self.at += len(chunk)
        return bytes(chunk)


def _names(code: str) -> set[str]:
    """Every name and attribute the code mentions (a syntax error mentions nothing)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.update(node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.alias):
            found.add((node.asname or node.name).split(".")[0])
    return found


def _codes(value: Any) -> list[types.CodeType]:
    """The code objects of a function, method or class defined in the session."""
    if getattr(value, "__module__", None) != "__main__":
        value = type(value)  # an instance: its class's methods
        if getattr(value, "__module__", None) != "__main__":
            return []
    if isinstance(value, types.FunctionType):
        return [value.__code__]
    if isinstance(value, type):
        return [
            member.__code__
            for klass in value.__mro__
            if klass.__module__ == "__main__"
            for member in vars(klass).values()
            if isinstance(member, types.FunctionType)
        ]
    return []


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def send_piece(channel: Any, name: str, read: Callable[[int], bytes], size: int) -> None:
    """A piece as a header, ``size`` bytes in chunks and an end marker, atomically."""
    with channel.lock:
        protocol.write_all(
            channel.fd, protocol.encode_json({"type": "piece", "name": name, "size": size})
        )
        left = size
        while left > 0 and (chunk := read(min(protocol.CHUNK, left))):
            protocol.write_all(channel.fd, protocol.encode_bytes(chunk))
            left -= len(chunk)
        protocol.write_all(channel.fd, protocol.encode_json({"type": "file_end"}))
