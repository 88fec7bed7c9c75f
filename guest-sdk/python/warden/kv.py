"""Key-value storage in the agent's own namespace, through ``wasi:keyvalue``.
The host picks the namespace (the agent's name); a bucket is a named area
within it. Values persist across runs on the node's store::

    from warden.kv import Bucket

    notes = Bucket.open("notes")
    notes.set("last", "hello")
    visits = notes.increment("visits")
    notes.set_json("profile", {"name": "ada"})

Every method raises :class:`KvError` on failure.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

from componentize_py_types import Err
from wit_world.imports import atomics as _atomics
from wit_world.imports import kv_cas as _kv_cas
from wit_world.imports import wasi_keyvalue_store as _store

from ._errors import KvError

__all__ = ["Bucket", "KvError"]

Value = bytes | bytearray | str


def _bytes(value: Value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _error(e: Err[Any]) -> KvError:
    v = e.value
    if isinstance(v, _store.Error_AccessDenied):
        return KvError("access_denied", "key-value storage was not granted to this run")
    if isinstance(v, _store.Error_NoSuchStore):
        return KvError("no_such_bucket", "no such bucket")
    return KvError("other", f"key-value error: {getattr(v, 'value', v)}")


class Bucket:
    """An open bucket. Also a context manager that closes it."""

    def __init__(self, inner: _store.Bucket) -> None:
        self._inner = inner

    @staticmethod
    def open(name: str = "default") -> Bucket:
        """Opens the bucket ``name`` (created on first write)."""
        try:
            return Bucket(_store.open(name))
        except Err as e:
            raise _error(e) from None

    def get(self, key: str) -> bytes | None:
        """The value at ``key``, ``None`` when absent."""
        try:
            return self._inner.get(key)
        except Err as e:
            raise _error(e) from None

    def get_text(self, key: str) -> str | None:
        """The value at ``key`` as UTF-8 text."""
        raw = self.get(key)
        try:
            return None if raw is None else raw.decode()
        except UnicodeDecodeError as e:
            raise KvError("decode", f"stored value is not UTF-8 text: {e}") from None

    def get_json(self, key: str) -> Any:
        """The value at ``key`` decoded from JSON (``None`` when absent)."""
        raw = self.get(key)
        try:
            return None if raw is None else json.loads(raw)
        except ValueError as e:
            raise KvError("decode", f"stored value is not the expected JSON: {e}") from None

    def set(self, key: str, value: Value) -> None:
        """Stores ``value`` (bytes, or text as UTF-8) at ``key``."""
        try:
            self._inner.set(key, _bytes(value))
        except Err as e:
            raise _error(e) from None

    def set_json(self, key: str, value: Any) -> None:
        """Stores ``value`` at ``key`` as JSON."""
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise KvError("decode", f"value is not JSON-serialisable: {e}") from None
        self.set(key, text)

    def delete(self, key: str) -> None:
        """Removes ``key``; nothing happens when it is absent."""
        try:
            self._inner.delete(key)
        except Err as e:
            raise _error(e) from None

    def exists(self, key: str) -> bool:
        try:
            return self._inner.exists(key)
        except Err as e:
            raise _error(e) from None

    def keys(self) -> list[str]:
        """Every key in the bucket, in order."""
        keys: list[str] = []
        cursor: int | None = None
        while True:
            try:
                page = self._inner.list_keys(cursor)
            except Err as e:
                raise _error(e) from None
            keys.extend(page.keys)
            if page.cursor is None:
                return keys
            cursor = page.cursor

    def increment(self, key: str, delta: int = 1) -> int:
        """Adds ``delta`` (0 or more) to the counter at ``key`` (0 when
        absent) atomically and returns the new value."""
        if delta < 0:
            raise ValueError("delta must not be negative")
        try:
            return _atomics.increment(self._inner, key, delta)
        except Err as e:
            raise _error(e) from None

    def compare_and_swap(self, key: str, expected: Value | None, new: Value) -> bool:
        """Sets ``key`` to ``new`` if its value is ``expected`` now (``None``:
        the key is absent), atomically, across every node sharing the store;
        returns whether it did. Read, compute, then swap, and try again when
        another writer came first."""
        old = None if expected is None else _bytes(expected)
        try:
            return _kv_cas.compare_and_swap(self._inner, key, old, _bytes(new))
        except Err as e:
            raise _error(e) from None

    def close(self) -> None:
        """Releases the bucket now rather than when it is collected."""
        self._inner.__exit__(None, None, None)

    def __enter__(self) -> Bucket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
