"""Assembling and verifying the embedded model's GGUF file from its sources.

The parts come from real (tiny) installed distributions: a `*.dist-info` directory with a RECORD and
the `data/partNN.bin` files, on `sys.path`, found through `importlib.metadata` as the real packages are.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.exceptions import ModelFileError
from tether.models import _gguf
from tether.models._gguf import (
    MODELS,
    GGUFSpec,
    LocalFile,
    OllamaBlob,
    PyPIParts,
    check_gguf,
    ensure_model_file,
    resolve_model_path,
)

PARTS = [b"GGUF" + b"\x03" * 1000, b"\x11" * 777, b"tail" * 50]
WHOLE = b"".join(PARTS)
SHA = hashlib.sha256(WHOLE).hexdigest()
PACKAGES = ("fakemodel-part1", "fakemodel-part2", "fakemodel-part3")


def _install(site: Path, package: str, index: int, data: bytes, *, version: str = "1.0") -> Path:
    """Install a distribution shaped like the model-part packages into `site`."""
    module = package.replace("-", "_")
    part = site / module / "data" / f"part{index:02d}.bin"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    (site / module / "__init__.py").write_text("")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{module}/__init__.py,,\n{module}/data/part{index:02d}.bin,,\n")
    return part


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "site-packages"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama"))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Callable[..., GGUFSpec]:
    def register(*, sha256: str = SHA, size: int = len(WHOLE), extra_sources: tuple = ()) -> GGUFSpec:
        spec = GGUFSpec(
            name="fake",
            filename="fake.gguf",
            size=size,
            sha256=sha256,
            sources=(
                PyPIParts(packages=PACKAGES, version="1.0", setup_hint="make setup"),
                *extra_sources,
                OllamaBlob(sha256=sha256),
            ),
        )
        monkeypatch.setitem(MODELS, "fake", spec)
        return spec

    return register


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_assembles_verifies_and_caches(site: Path, cache: Path, fake_model: Callable[..., GGUFSpec]) -> None:
    for index, (package, data) in enumerate(zip(PACKAGES, PARTS, strict=True), start=1):
        _install(site, package, index, data)
    fake_model()

    path = ensure_model_file("fake", cache_dir=cache)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == WHOLE
    assert _leftovers(cache) == ["fake.gguf", "fake.gguf.sha256-ok"]


def test_a_verified_file_is_not_hashed_again(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    for index, (package, data) in enumerate(zip(PACKAGES, PARTS, strict=True), start=1):
        _install(site, package, index, data)
    fake_model()
    ensure_model_file("fake", cache_dir=cache)

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(_gguf, "_sha256_file", no_hashing)
    monkeypatch.setattr(_gguf, "_concatenate", no_hashing)
    assert ensure_model_file("fake", cache_dir=cache).read_bytes() == WHOLE


def test_a_cached_file_changed_since_verification_is_rebuilt(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec]
) -> None:
    for index, (package, data) in enumerate(zip(PACKAGES, PARTS, strict=True), start=1):
        _install(site, package, index, data)
    fake_model()
    path = ensure_model_file("fake", cache_dir=cache)
    corrupted = bytearray(WHOLE)
    corrupted[500] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    os.utime(path, ns=(1, 1))  # a different mtime: the sidecar no longer vouches for it

    assert ensure_model_file("fake", cache_dir=cache).read_bytes() == WHOLE


def test_missing_parts_name_the_pip_command(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec]
) -> None:
    _install(site, PACKAGES[0], 1, PARTS[0])
    fake_model()

    with pytest.raises(ModelFileError) as info:
        ensure_model_file("fake", cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message
    assert "2 of 3 parts are not installed" in message
    assert "pip install fakemodel-part2==1.0 fakemodel-part3==1.0 (or `make setup`)" in message
    assert _leftovers(cache) == []


def test_a_part_of_the_wrong_version_counts_as_missing(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec]
) -> None:
    _install(site, PACKAGES[0], 1, PARTS[0])
    _install(site, PACKAGES[1], 2, PARTS[1], version="0.9")
    _install(site, PACKAGES[2], 3, PARTS[2])
    fake_model()

    with pytest.raises(ModelFileError, match=re.escape("run: pip install fakemodel-part2==1.0 (or")):
        ensure_model_file("fake", cache_dir=cache)


def test_corrupt_part_is_reported_and_nothing_is_left(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec]
) -> None:
    _install(site, PACKAGES[0], 1, PARTS[0])
    _install(site, PACKAGES[1], 2, b"\x12" + PARTS[1][1:])  # same size, one byte changed
    _install(site, PACKAGES[2], 3, PARTS[2])
    fake_model()

    with pytest.raises(ModelFileError) as info:
        ensure_model_file("fake", cache_dir=cache)
    message = str(info.value)
    got = hashlib.sha256(PARTS[0] + b"\x12" + PARTS[1][1:] + PARTS[2]).hexdigest()
    assert f"has sha256 {got}, expected {SHA}" in message
    assert "the file was removed" in message
    assert (
        "pip install --force-reinstall fakemodel-part1==1.0 fakemodel-part2==1.0 fakemodel-part3==1.0"
        in message
    )
    assert _leftovers(cache) == []


def test_parts_of_the_wrong_total_size_are_reported_before_copying(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec]
) -> None:
    for index, (package, data) in enumerate(zip(PACKAGES, PARTS, strict=True), start=1):
        _install(site, package, index, data)
    fake_model(size=len(WHOLE) + 1)

    expected = f"hold {len(WHOLE):,} B but fake is {len(WHOLE) + 1:,} B; reinstall them: pip install --force"
    with pytest.raises(ModelFileError, match=re.escape(expected)):
        ensure_model_file("fake", cache_dir=cache)
    assert _leftovers(cache) == []


def test_a_corrupt_cached_file_is_named_when_it_cannot_be_rebuilt(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec]
) -> None:
    fake_model()
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"\x00" * len(WHOLE))

    with pytest.raises(ModelFileError) as info:
        ensure_model_file("fake", cache_dir=cache)
    message = str(info.value)
    assert (
        f"the cached {cache / 'fake.gguf'} had sha256 {hashlib.sha256(bytes(len(WHOLE))).hexdigest()}"
        in message
    )
    assert f"expected {SHA}, and was removed" in message
    assert "run: pip install fakemodel-part1==1.0" in message
    assert _leftovers(cache) == []


def test_an_unreadable_part_names_its_path(
    site: Path, cache: Path, fake_model: Callable[..., GGUFSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [_install(site, p, i, d) for i, (p, d) in enumerate(zip(PACKAGES, PARTS, strict=True), start=1)]
    fake_model()
    real_open = Path.open

    def open_(self: Path, *args: object, **kwargs: object) -> object:
        # chmod 000 does not stop root, who runs CI here; fail the read the way the kernel would
        if self == paths[1]:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", open_)
    with pytest.raises(ModelFileError, match=re.escape(f"cannot read {paths[1]}: Permission denied")):
        ensure_model_file("fake", cache_dir=cache)
    assert _leftovers(cache) == []


def test_another_source_is_one_entry_more(
    site: Path, cache: Path, tmp_path: Path, fake_model: Callable[..., GGUFSpec]
) -> None:
    copy = tmp_path / "downloads" / "model.gguf"
    copy.parent.mkdir()
    copy.write_bytes(WHOLE)
    fake_model(extra_sources=(LocalFile(path=str(copy)),))

    assert ensure_model_file("fake", cache_dir=cache).read_bytes() == WHOLE


def test_an_ollama_blob_is_found_by_its_sha(
    site: Path,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_model: Callable[..., GGUFSpec],
) -> None:
    blobs = tmp_path / "ollama" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"sha256-{SHA}").write_bytes(WHOLE)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    fake_model()

    assert ensure_model_file("fake", cache_dir=cache).read_bytes() == WHOLE


def test_default_cache_dir_follows_tether_home(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_model: Callable[..., GGUFSpec]
) -> None:
    for index, (package, data) in enumerate(zip(PACKAGES, PARTS, strict=True), start=1):
        _install(site, package, index, data)
    fake_model()
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "home"))

    assert ensure_model_file("fake") == tmp_path / "home" / "models" / "fake.gguf"


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(
        ModelFileError, match=r"unknown model 'qwen9'; known models are \['qwen2.5-coder-0.5b'"
    ):
        ensure_model_file("qwen9")


def test_explicit_path_must_be_gguf(tmp_path: Path) -> None:
    good = tmp_path / "good.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00rest")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"<html>not found</html>")

    assert resolve_model_path("anything", path=good) == good
    with pytest.raises(ModelFileError, match=re.escape(f"{bad} is not a GGUF file (starts with b'<htm'")):
        resolve_model_path("anything", path=bad)
    with pytest.raises(
        ModelFileError, match=re.escape(f"model file {tmp_path / 'nope.gguf'} does not exist")
    ):
        check_gguf(tmp_path / "nope.gguf")


def test_tether_model_path_overrides_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    monkeypatch.setenv("TETHER_MODEL_PATH", str(own))

    assert resolve_model_path("qwen2.5-coder-0.5b") == own


def test_the_registry_matches_the_local_extra() -> None:
    """`pip install 'tether[local]'` installs exactly the parts the default model is assembled from."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    local = set(pyproject["project"]["optional-dependencies"]["local"])
    (source, *_) = MODELS["qwen2.5-coder-0.5b"].sources
    assert isinstance(source, PyPIParts)
    assert {f"{p}=={source.version}" for p in source.packages} <= local
    assert [spec.size for spec in MODELS.values()] == [491_400_064, 1_117_320_768]
