"""Where the model registry's bytes live: a local directory or an object store (fsspec).

``ModelRegistry`` speaks to a ``RegistryStore`` port with one class per backend:

* ``LocalStore`` (a plain path or ``file://``): a version is written into a temporary
  directory beside its final one and renamed into place; the pointer is a file replaced
  with ``os.replace``. Imports nothing beyond the standard library.
* ``ObjectStore`` (``s3://bucket/prefix``): an object store has no rename, so the
  protocol is *manifest last*: every other file of a version is uploaded under its final
  key first, the manifest (which carries the weights' SHA-256) last, and only a version
  whose manifest exists is listed or loadable. The pointer is one object replaced by a
  single PUT, after the version is complete. S3 makes a finished PUT (multipart
  included) visible whole and with read-after-write consistency, so a reader sees the
  old pointer or the new one, and never part of a file. The s3fs client keeps no
  listings cache: a listing cached before another machine's manifest landed would hide
  that version (a flaky "no model version" in the threaded test showed it).

Credentials never pass through here: fsspec/s3fs take them from the standard AWS
environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``, an instance role).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

MANIFEST = "manifest.json"

#: URL schemes whose single-object PUT is atomic (``memory`` is fsspec's in-process store).
OBJECT_SCHEMES = ("s3", "s3a", "memory")


def is_url(root: object) -> bool:
    """True for ``scheme://...`` roots; a ``Path`` or a plain string path is not a URL."""
    return isinstance(root, str) and "://" in root


def check_root_url(url: str) -> str:
    """The URL, or a ``ValueError`` saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL with a host {parts.netloc!r}; use file:///abs/path")
        return url
    if parts.scheme not in OBJECT_SCHEMES:
        raise ValueError(
            f"unsupported scheme {parts.scheme!r}: a path, file://, or one of "
            f"{', '.join(s + '://' for s in OBJECT_SCHEMES)}"
        )
    if "@" in parts.netloc:
        raise ValueError("credentials in the URL; set them in the AWS environment instead")
    if not parts.netloc and parts.scheme != "memory":
        raise ValueError("no bucket: expected s3://bucket[/prefix]")
    return url


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RegistryStore(Protocol):
    """The bytes of a registry: version directories of small files, and one pointer."""

    #: Printable location, for messages.
    location: str

    def versions(self) -> list[str]:
        """Complete versions only (those whose manifest exists)."""
        ...

    def read(self, version: str, name: str) -> bytes:
        """One file of a version; ``FileNotFoundError`` when absent."""
        ...

    def staging(self, version: str) -> contextlib.AbstractContextManager[Path]:
        """A local directory to write a version's files into (removed afterwards)."""
        ...

    def publish(self, version: str, staged: Path, last: str) -> None:
        """Make the staged files visible as ``version``, with ``last`` written last."""
        ...

    def local_file(self, version: str, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path holding one file of a version (downloaded when remote)."""
        ...

    def read_pointer(self, name: str) -> str | None: ...

    def write_pointer(self, name: str, value: str) -> None:
        """Replace the pointer atomically."""
        ...


class LocalStore:
    """A directory on this machine (or a shared volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        (root / "versions").mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[str]:
        d = self.root / "versions"
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST).exists())

    def read(self, version: str, name: str) -> bytes:
        return (self.root / "versions" / version / name).read_bytes()

    @contextlib.contextmanager
    def staging(self, version: str) -> Iterator[Path]:
        # Beside the final directory, so that publishing is one rename on one file system.
        tmp = self.root / "versions" / f".tmp-{version}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, version: str, staged: Path, last: str) -> None:
        os.replace(staged, self.root / "versions" / version)  # all files at once

    @contextlib.contextmanager
    def local_file(self, version: str, name: str) -> Iterator[Path]:
        yield self.root / "versions" / version / name

    def read_pointer(self, name: str) -> str | None:
        try:
            return (self.root / name).read_text()
        except FileNotFoundError:
            return None

    def write_pointer(self, name: str, value: str) -> None:
        tmp = self.root / f".{name}.{uuid.uuid4().hex}"
        tmp.write_text(value)
        os.replace(tmp, self.root / name)


class ObjectStore:
    """An fsspec object store (S3 and compatibles) under ``url``; manifest-last protocol."""

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        import fsspec  # only here: a local registry never imports it

        check_root_url(url)
        parts = urlsplit(url)
        options: dict[str, Any] = {}
        self._cat: dict[str, Any] = {}
        if parts.scheme in ("s3", "s3a"):
            # No listings cache: another machine's uploads must show at once (a cached
            # listing without a new manifest made its read fail); a GET of a small file
            # without the size lookup that would consult that cache.
            options.update(use_listings_cache=False, skip_instance_cache=True)
            # Bounded waits, retried: a GET whose server stalls mid-response hung a
            # registry load for good (seen once in CI against moto_server); a read
            # timeout turns it into a retry on a fresh connection.
            options["config_kwargs"] = {
                "connect_timeout": 10,
                "read_timeout": 30,
                "retries": {"max_attempts": 5, "mode": "standard"},
            }
            self._cat = {"max_concurrency": 1}
            if endpoint_url:
                options["endpoint_url"] = endpoint_url
        self.fs = fsspec.filesystem(parts.scheme, **options)
        self.location = url.rstrip("/")
        self.base = self.fs._strip_protocol(self.location).rstrip("/")
        if parts.scheme in ("s3", "s3a") and not self.fs.exists(parts.netloc):
            raise FileNotFoundError(f"bucket {parts.netloc!r} of {url} does not exist")

    def _key(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def versions(self) -> list[str]:
        prefix = self._key("versions")
        self.fs.invalidate_cache(prefix)  # in case a backend caches listings anyway
        try:
            keys = self.fs.find(prefix)
        except FileNotFoundError:
            return []
        out = set()
        for key in keys:
            rel = key[len(prefix) + 1 :].split("/")
            if len(rel) == 2 and rel[1] == MANIFEST and not rel[0].startswith("."):
                out.add(rel[0])
        return sorted(out)

    def read(self, version: str, name: str) -> bytes:
        return bytes(self.fs.cat_file(self._key("versions", version, name), **self._cat))

    @contextlib.contextmanager
    def staging(self, version: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"learnrec-{version}-") as d:
            yield Path(d)

    def publish(self, version: str, staged: Path, last: str) -> None:
        files = sorted(p.name for p in staged.iterdir() if p.is_file())
        if last not in files:
            raise FileNotFoundError(f"{last} not staged for {version}")
        # Every file under its final key, each in one (possibly multipart) upload; the
        # manifest last: until it exists the version is invisible to ``versions``/``read``.
        for name in [f for f in files if f != last] + [last]:
            self.fs.put_file(str(staged / name), self._key("versions", version, name))

    @contextlib.contextmanager
    def local_file(self, version: str, name: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"learnrec-{version}-") as d:
            path = Path(d) / name
            self.fs.get_file(self._key("versions", version, name), str(path))
            yield path

    def read_pointer(self, name: str) -> str | None:
        try:
            return bytes(self.fs.cat_file(self._key(name), **self._cat)).decode()
        except FileNotFoundError:
            return None

    def write_pointer(self, name: str, value: str) -> None:
        self.fs.pipe_file(self._key(name), value.encode())  # one PUT: old or new, never half


def unmangle(root: Path | str) -> Path | str:
    """``Path("s3://b/p")`` is ``s3:/b/p`` (an argparse ``type=Path`` does that): the URL again."""
    if isinstance(root, Path) and not root.is_absolute() and len(root.parts) > 1:
        head = root.parts[0]
        if head.endswith(":") and head[:-1] in OBJECT_SCHEMES:
            return f"{head}//{'/'.join(root.parts[1:])}"
    return root


def open_store(root: Path | str, *, endpoint_url: str | None = None) -> LocalStore | ObjectStore:
    """The backend for ``root``: a path or ``file://`` URL is local, else an object store."""
    if not is_url(root):
        return LocalStore(Path(root).expanduser())
    assert isinstance(root, str)
    check_root_url(root)
    parts = urlsplit(root)
    if parts.scheme == "file":
        return LocalStore(Path(parts.path))
    return ObjectStore(root, endpoint_url=endpoint_url)
