"""API keys: --api-key (repeatable), VDIFF_API_KEY / VLLM_API_KEY and --api-key-file, re-read when it changes.

A key is kept only as its SHA-256 digest and compared in constant time against every configured key (equal
lengths, no early exit), so neither the match position nor the key length shows in the timing. Keys are
never logged; their names are (and label the per-key metrics).

--api-key-file is either a file, one key per line as `key` or `name:key` (the first ':' separates them;
blank lines and '#' comments ignored), or a directory with one file per key named after it (a Kubernetes
Secret mounted whole: each data key is a key name, its value the key; dot-files such as `..data` skipped).
An unnamed key is named `key-` and the first 8 hex digits of its SHA-256, stable across reloads. Several
keys may share a name (an old and a new key during a rotation): they then share metrics and limits.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vdiff.errors import VdiffValidationError

logger = logging.getLogger(__name__)

KEY_FILE_FLAG = "--api-key-file"


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    digest: bytes


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def default_key_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def make_key(key: str, name: str | None = None) -> ApiKey:
    return ApiKey(name or default_key_name(key), _digest(key))


def parse_key_lines(text: str) -> list[ApiKey]:
    keys = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = line.partition(":")
        if sep and name.strip() and key.strip():
            keys.append(make_key(key.strip(), name.strip()))
        else:
            keys.append(make_key(line))
    return keys


def bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class ApiKeyStore:
    """The keys clients may present; `authenticate` gives the matching key's name (None: no match)."""

    def __init__(self, static_keys: Iterable[str] = (), key_file: str | None = None) -> None:
        self._static = [make_key(key) for key in static_keys if key]
        self._key_file = Path(key_file).expanduser() if key_file else None
        self._file_keys: list[ApiKey] = []
        self._signature: tuple[object, ...] | None = None
        self._is_unreadable = False
        if self._key_file is not None:
            if not self._key_file.exists():
                raise VdiffValidationError(f"{KEY_FILE_FLAG} {key_file} does not exist", KEY_FILE_FLAG)
            try:
                self._load()
            except OSError as error:
                raise VdiffValidationError(
                    f"cannot read {KEY_FILE_FLAG} {key_file}: {error.strerror or error}", KEY_FILE_FLAG
                ) from None

    @property
    def is_required(self) -> bool:
        """A key file, even an empty one, means authentication is on (an emptied file locks clients out)."""
        return bool(self._static) or self._key_file is not None

    @property
    def keys(self) -> list[ApiKey]:
        self.reload_if_changed()
        return self._static + self._file_keys

    def authenticate(self, token: str) -> str | None:
        presented = _digest(token)
        match = None
        for key in self.keys:
            if hmac.compare_digest(presented, key.digest) and match is None:
                match = key.name
        return match

    # The key file.
    def _file_signature(self) -> tuple[object, ...]:
        assert self._key_file is not None
        paths = [self._key_file]
        if self._key_file.is_dir():
            paths += sorted(p for p in self._key_file.iterdir() if not p.name.startswith("."))
        signature: list[object] = []
        for path in paths:
            stat = path.stat()  # follows symlinks: a Secret's ..data swap changes the target's inode
            signature.append((path.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(signature)

    def _read_file_keys(self) -> list[ApiKey]:
        assert self._key_file is not None
        if not self._key_file.is_dir():
            return parse_key_lines(self._key_file.read_text())
        keys = []
        for path in sorted(self._key_file.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            key = path.read_text().strip()
            if key:
                keys.append(make_key(key, path.name))
        return keys

    def _load(self) -> None:
        signature = self._file_signature()
        self._file_keys = self._read_file_keys()
        self._signature = signature
        names = sorted({key.name for key in self._file_keys})
        logger.info("%s: %d API key(s) loaded, names %s", KEY_FILE_FLAG, len(self._file_keys), names)

    def reload_if_changed(self) -> None:
        if self._key_file is None:
            return
        try:
            if self._file_signature() != self._signature:
                self._load()
            self._is_unreadable = False
        except OSError as error:  # mid-rotation or removed: keep the last keys read
            if self._is_unreadable:
                return
            self._is_unreadable = True
            logger.warning(
                "%s %s cannot be read (%s): keeping the %d key(s) read before",
                KEY_FILE_FLAG, self._key_file, error.strerror or error, len(self._file_keys),
            )  # fmt: skip


def static_keys(api_key: str | list[str] | None) -> list[str]:
    if api_key is None:
        return []
    values = [api_key] if isinstance(api_key, str) else api_key
    return [value for value in values if value]


def key_store_from_args(api_key: str | list[str] | None, api_key_file: str | None) -> ApiKeyStore:
    return ApiKeyStore(static_keys(api_key), api_key_file)
