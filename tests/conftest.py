"""Common fixtures: a clean environment, settings on tmp_path, a file store with a test clock;
the markers that split the suite into tiers (see pyproject.toml)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from labbot.app import blob_store
from labbot.cli import cli
from labbot.config import Settings, load_settings
from labbot.errors import SandboxUnavailable
from labbot.files import FileStore, Limits, SqliteMetadataStore
from labbot.sandbox import CodeInterpreter, Executor, Jail
from tests.fakes.openai_server import fake_openai  # noqa: F401 - the fixture, for every test
from tests.fixtures import FORMATS
from tests.servers import S3, Nats, nats_server, seaweedfs

FIXTURES = FORMATS  # the in-repo format fixtures (tests/fixtures/make_fixtures.py writes them)


_PREFIXES = (
    "LABBOT_",
    "OPENAI_",
    "DISCORD_",
    "MONGODB_",
    "FILE_",
    "MAX_",
    "LOG_",
    "CODE_",
    "AWS_",
)


# What a test needs, from the fixtures it uses (all of them, however indirectly)...
FIXTURE_MARKS = {
    "make_interpreter": "sandbox",  # interpreter and jailed use it
    "workers": "sandbox",  # worker machines run real sandboxes
    "nats": "nats",
    "s3_server": "s3",
}
# ... or from where it lives. Parameters that start servers carry their marks themselves.
# `alone`: nothing may run beside it (`make test` runs these last): the multi-host test measures
# how throughput grows, and the unprivileged rerun's fork bomb has no cgroup to bound its CPU.
PATH_MARKS = {
    "tests/sandbox/": ("sandbox",),  # the sandbox's own tests (its runtime's loaders included)
    "tests/sandbox/test_unprivileged.py": ("alone",),
    "tests/remote/test_tls.py": ("nats",),  # starts its own nats-server with TLS
    "tests/remote/test_multihost.py": ("multihost", "alone"),
    "tests/test_doctor.py": ("sandbox",),  # doctor starts a sandbox to check it
}
TIERS = ("sandbox", "nats", "s3", "multihost", "mongo")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with what it needs, so ``-m "not sandbox and not nats ..."`` selects
    the fast tier."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        marks = {mark for fixture, mark in FIXTURE_MARKS.items() if fixture in names}
        where = item.path.relative_to(config.rootpath).as_posix()
        for prefix, path_marks in PATH_MARKS.items():
            if where.startswith(prefix):
                marks.update(path_marks)
        for mark in sorted(marks - {m.name for m in item.iter_markers()}):
            item.add_marker(getattr(pytest.mark, mark))


_deselected: list[pytest.Item] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(items)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line saying which tiers were left out by ``-m`` and how many tests each holds."""
    if not _deselected:
        return
    counts = {tier: sum(1 for i in _deselected if i.get_closest_marker(tier)) for tier in TIERS}
    shown = ", ".join(f"{tier} {n}" for tier, n in counts.items() if n)
    terminalreporter.write_line(f"deselected tests by tier: {shown or 'none of the tiers'}")


@pytest.fixture(autouse=True)
def sandbox_only_when_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test not marked ``sandbox`` that starts a real sandbox fails, naming the marker: the
    fast tier never starts one unnoticed."""
    if request.node.get_closest_marker("sandbox") is not None:
        yield
        return
    tried: list[str] = []

    async def refuse(self: Jail, name: str, **kwargs: Any) -> Any:
        tried.append(name)
        raise SandboxUnavailable("This test is not marked sandbox (tests/conftest.py).")

    monkeypatch.setattr(Jail, "spawn", refuse)
    yield
    assert not tried, "this test starts a real sandbox: mark it sandbox (tests/conftest.py)"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # strictly increasing, like real saves
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's shell or a stray .env."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return load_settings(LABBOT_DATA_DIR=data_dir)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_store(settings: Settings) -> FileStore:
    """A file store on the embedded SQLite file and the settings' blob store (not started)."""
    return FileStore(
        SqliteMetadataStore(settings.database_path),
        blob_store(settings),
        Limits.from_settings(settings),
    )


E = TypeVar("E", bound=Executor)
Factory = Callable[..., Any]  # make_interpreter, make_remote: (**overrides) -> async with


@asynccontextmanager
async def open_executor(
    build: Callable[[Settings, FileStore], E], settings: Settings
) -> AsyncIterator[tuple[E, FileStore]]:
    """An executor of any kind and its file store, started, closed in reverse on exit."""
    store = make_store(settings)
    await store.start()
    try:
        executor = build(settings, store)
        await executor.start()
        try:
            yield executor, store
        finally:
            await executor.close()
    finally:
        await store.close()


@pytest.fixture
def make_interpreter(tmp_path: Path) -> Factory:
    """Build an interpreter (and its store) with settings overrides; closed by the caller's
    ``async with``."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[tuple[CodeInterpreter, FileStore]]:
        overrides.setdefault("SANDBOX_WARM_POOL", 0)
        # Most tests need no data stack: interpreters start in milliseconds instead of seconds.
        overrides.setdefault("SANDBOX_PRELOAD", False)
        settings = load_settings(LABBOT_DATA_DIR=tmp_path / "data", **overrides)
        return open_executor(CodeInterpreter, settings)

    return make


@pytest.fixture
async def store(settings: Settings, clock: Clock) -> AsyncIterator[FileStore]:
    store = make_store(settings)
    store.clock = clock
    await store.start()
    yield store
    await store.close()


def model_settings(data_dir: Path, base_url: str, **overrides: Any) -> Settings:
    """Settings for tests that talk to the loopback model API: no warm pool, no retries."""
    values: dict[str, Any] = {
        "LABBOT_DATA_DIR": data_dir,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": base_url,
        "DEFAULT_MODEL": "gpt-4o-mini",
        "SANDBOX_WARM_POOL": 0,
        "SANDBOX_PRELOAD": False,  # interpreters start in milliseconds
        "LLM_MAX_RETRIES": 0,
        "CODE_EXECUTION_TIMEOUT": 30,
    }
    return load_settings(**(values | overrides))


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    """An upload stream made of the given chunks."""
    for part in parts:
        yield part


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A real SeaweedFS S3 gateway on loopback, shared by the session."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


WORKER_IDS = ["w1", "w2", "w3", "w4"]


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A real nats-server with JetStream and per-role users (bot; workers w1-w4) on loopback."""
    with nats_server(tmp_path_factory.mktemp("nats"), WORKER_IDS) as server:
        yield server


class Keep(logging.Handler):
    """A log handler that keeps every line as "logger message" (add it to the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()}")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name in list(logging.root.manager.loggerDict):
        logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """`labbot ARGS...` in process on a data dir of the test's own; asserts the exit code
    (``code``, 0 unless told) and returns the result."""
    monkeypatch.setenv("LABBOT_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke
