"""The model registry on a real S3-compatible server (moto's standalone server, loopback).

A fixture starts ``python -m moto.server`` on a free 127.0.0.1 port and stops it after;
credentials reach s3fs only through the AWS environment variables, the endpoint through
``LEARNREC_REGISTRY_ENDPOINT_URL``. The tests skip, saying why, when the server cannot
be started (moto not installed, no free port).
"""

from __future__ import annotations

import hashlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import torch

from learn_core.models.learn import LearnConfig, LearnModel
from learn_core.models.towers import TowerConfig
from learn_core.registry import WEIGHTS, ModelRegistry, RegistryError
from learn_core.settings import ConfigError

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    for mod in ("moto.server", "s3fs", "flask"):
        if importlib.util.find_spec(mod.split(".")[0]) is None:
            pytest.skip(f"{mod} is not installed (pip install -e '.[store,test]')")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                pytest.skip(f"moto_server exited with {proc.returncode}: {err}")
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip(f"moto_server did not answer on {url} within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_root(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the registry's settings and credentials only from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LEARNREC_REGISTRY_ENDPOINT_URL", s3_endpoint)
    import s3fs

    bucket = f"models-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True).mkdir(bucket)
    root = f"s3://{bucket}/learnrec/registry"
    monkeypatch.setenv("LEARNREC_REGISTRY_ROOT", root)
    return root


def _model(seed: int) -> LearnModel:
    torch.manual_seed(seed)
    return LearnModel(
        LearnConfig(tower=TowerConfig(content_dim=16, d_model=16, n_heads=2, max_len=8))
    )


def _fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, t in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_save_load_switch(s3_root: str) -> None:
    writer = ModelRegistry()  # root and endpoint from LEARNREC_REGISTRY_*
    assert writer.root == s3_root
    a, b = _model(0), _model(1)
    va = writer.save(a, content_model="mini", metrics={"hr@10": 0.1})
    vb = writer.save(b, content_model="mini", parent_version=va)
    reader = ModelRegistry(s3_root)  # another process would see the same
    assert reader.versions() == sorted([va, vb])
    assert reader.current_version() is None
    writer.promote(va)
    assert reader.current_version() == va
    assert _fingerprint(reader.load(va).model) == _fingerprint(a)
    writer.promote(vb)
    assert reader.current_version() == vb
    loaded = reader.load(vb)
    assert _fingerprint(loaded.model) == _fingerprint(b)
    assert loaded.manifest["parent_version"] == va
    with pytest.raises(RegistryError, match="no model version"):
        reader.promote("m-missing")
    keys = reader.store.fs.find(reader.store._key("versions", vb))
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["manifest.json", WEIGHTS]


def test_missing_bucket_fails_at_start_naming_the_variable(s3_endpoint: str, s3_root: str) -> None:
    with pytest.raises(ConfigError, match="LEARNREC_REGISTRY_ROOT"):
        ModelRegistry(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x")


def test_reader_polls_while_writer_switches(s3_root: str) -> None:
    """Readers that follow the pointer, or the newest listed version, load whole versions.

    Each version's manifest carries the fingerprint of the weights it was saved from
    (``extra``), so a reader can tell a half-uploaded or mixed model from the real one.
    """
    writer, reader = ModelRegistry(s3_root), ModelRegistry(s3_root)
    first = _model(100)
    writer.promote(writer.save(first, content_model="mini", fingerprint=_fingerprint(first)))

    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def check(v: str) -> None:
        loaded = reader.load(v)
        want = loaded.manifest["extra"]["fingerprint"]
        assert _fingerprint(loaded.model) == want, f"{v}: loaded weights are not the saved ones"

    def poll() -> None:
        try:
            while not stop.is_set():
                v = reader.current_version()
                assert v is not None, "the pointer vanished"
                check(v)
                seen.append(v)
                check(reader.versions()[-1])  # the newest complete version, maybe unpromoted
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    switches = 6
    try:
        for i in range(switches):
            m = _model(i)
            v = writer.save(m, content_model="mini", fingerprint=_fingerprint(m))
            writer.promote(v)
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors[0]
    assert len(seen) >= switches, f"the reader loaded only {len(seen)} times"
    assert len(set(seen)) >= 3, f"the reader saw too few versions: {sorted(set(seen))}"
    assert reader.current_version() == v


def test_no_partial_version_between_uploads(s3_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between any two of the writer's uploads, every version a reader sees loads whole.

    The deterministic twin of the threaded test: the reader runs at each step of the
    upload, so a protocol that made a version visible before its weights fails here.
    """
    writer, reader = ModelRegistry(s3_root), ModelRegistry(s3_root)
    steps: list[list[str]] = []

    def reader_view() -> None:
        listed = reader.versions()
        for v in listed:
            loaded = reader.load(v)
            assert _fingerprint(loaded.model) == loaded.manifest["extra"]["fingerprint"]
        current = reader.current_version()
        if current is not None:
            assert current in listed, f"the pointer names {current}, not a complete version"
        steps.append(listed)

    fs = writer.store.fs
    put_file, pipe_file = fs.put_file, fs.pipe_file

    def put_then_look(*a: object, **kw: object) -> object:
        reader_view()
        out = put_file(*a, **kw)
        reader_view()
        return out

    def pipe_then_look(*a: object, **kw: object) -> object:
        reader_view()
        out = pipe_file(*a, **kw)
        reader_view()
        return out

    monkeypatch.setattr(fs, "put_file", put_then_look)
    monkeypatch.setattr(fs, "pipe_file", pipe_then_look)
    for seed in range(2):
        m = _model(seed)
        writer.promote(writer.save(m, content_model="mini", fingerprint=_fingerprint(m)))
    assert len(steps) >= 8 and steps[-1] == reader.versions() and len(steps[-1]) == 2


def test_reader_sees_a_manifest_uploaded_after_its_listing(s3_root: str) -> None:
    """Two machines: the reader listed the version's prefix before its manifest landed.

    A listings cache in the reader's client (s3fs caches by default) kept that listing
    and the manifest read then failed with "no model version" (seen once in the
    threaded test above). Each registry has its own client, as on separate machines.
    """
    writer, reader = ModelRegistry(s3_root), ModelRegistry(s3_root)
    assert writer.store.fs is not reader.store.fs
    m = _model(7)
    v = writer.save(m, content_model="mini", fingerprint=_fingerprint(m))
    weights, manifest = writer.store.read(v, WEIGHTS), writer.store.read(v, "manifest.json")
    late = "m99991231T000000-late0000"  # the same files again, uploaded step by step
    fs = writer.store.fs
    fs.pipe_file(writer.store._key("versions", late, WEIGHTS), weights)
    assert late not in reader.versions()  # the reader lists the half-uploaded prefix
    reader.store.fs.ls(reader.store._key("versions", late))  # and looks inside it
    fs.pipe_file(writer.store._key("versions", late, "manifest.json"), manifest)
    assert reader.versions()[-1] == late
    assert reader.manifest(late)["extra"]["fingerprint"] == _fingerprint(m)
    writer.promote(late)
    assert reader.current_version() == late
    assert _fingerprint(reader.load(late).model) == _fingerprint(m)
