"""The package allow-list (PyPI name ↔ import names) and installs into the runtime env only.

The runtime is shared by every user, so it changes only as the operator allows: only
allow-listed distributions, wheels only (no build script ever runs on the host), every version
already in the runtime kept (the runtime's own freeze is the constraint file), only after the
host has checked that the module really is missing, and at most PACKAGE_INSTALLS_PER_HOUR
attempts per user; a failed package is not tried again for an hour.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FAILURE_MEMORY = 3600.0  # seconds a failed install is not tried again
_WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class Package:
    """An installable package: its requirement, the modules it provides, extra installer args."""

    requirement: str
    imports: tuple[str, ...]
    installer_args: tuple[str, ...] = ()


def _p(requirement: str, *imports: str, args: tuple[str, ...] = ()) -> Package:
    name = requirement.split("[")[0].split("=")[0].split(">")[0].split("<")[0]
    return Package(requirement, imports or (name.replace("-", "_").lower(),), args)


DEFAULT_ALLOWLIST: tuple[Package, ...] = (
    _p("scikit-learn", "sklearn"),
    _p("pillow", "PIL"),
    _p("opencv-python-headless", "cv2"),
    _p("pyyaml", "yaml"),
    _p("beautifulsoup4", "bs4"),
    _p("scikit-image", "skimage"),
    _p("python-docx", "docx"),
    _p("python-pptx", "pptx"),
    _p("fpdf2", "fpdf"),
    _p("umap-learn", "umap"),
    _p("pyjanitor", "janitor"),
    _p("xlsxwriter"),
    _p("plotly"),
    _p("kaleido"),
    _p("altair"),
    _p("bokeh"),
    _p("sympy"),
    _p("networkx"),
    _p("xgboost"),
    _p("lightgbm"),
    _p("catboost"),
    _p("polars"),
    _p("duckdb"),
    _p("nltk"),
    _p("textblob"),
    _p("wordcloud"),
    _p("folium"),
    _p("pmdarima"),
    _p("prophet"),
    _p("shap"),
    _p("hdbscan"),
    _p("missingno"),
    _p("pingouin"),
    _p("lifelines"),
    _p("mplfinance"),
    _p("pyproj"),
    _p("rasterio"),
    _p("pdfplumber"),
    _p("reportlab"),
    _p("tqdm"),
    _p("rich"),
    _p("numba"),
    _p("sqlalchemy"),
    _p("pint"),
    _p("unidecode"),
    _p("rapidfuzz"),
    _p("tabulate"),
)  # torch and tensorflow are left out: gigabytes each; an operator adds them on purpose


class Allowlist:
    """Which missing module may be installed, and as which package."""

    def __init__(self, packages: tuple[Package, ...] = DEFAULT_ALLOWLIST, extra: str = "") -> None:
        self.packages = list(packages)
        for entry in filter(None, (e.strip() for e in extra.replace("\n", ",").split(","))):
            requirement, _, imports = entry.partition("=")
            requirement = requirement.strip()
            self.packages.append(_p(requirement, *(i.strip() for i in imports.split("|") if i)))
        self._by_import = {name: p for p in self.packages for name in p.imports}

    def resolve(self, module: str) -> Package | None:
        """The package that provides a top-level module, if it is allowed."""
        return self._by_import.get(module.split(".")[0])

    def names(self) -> list[str]:
        """Allowed requirement names, sorted (for messages)."""
        return sorted({p.requirement for p in self.packages}, key=str.lower)


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else (shutil.which("uv") or "uv")


class Installer:
    """Installs packages into the runtime venv, one at a time, with a timeout: wheels only, and
    never a version change of anything already installed."""

    def __init__(self, runtime_venv: Path, *, timeout: float) -> None:
        self.venv = runtime_venv
        self.python = runtime_venv / "bin" / "python"
        self.timeout = timeout
        self._lock = asyncio.Lock()

    def has_module(self, module: str) -> bool:
        """True if a top-level module of this name is in the runtime (a folder, a .py file or
        an extension), checked on disk: nothing from the sandbox is believed."""
        for site in self.venv.glob("lib/python3*/site-packages"):
            for entry in (site / module, site / f"{module}.py"):
                if entry.exists():
                    return True
            if any(site.glob(f"{module}.*.so")):
                return True
        return False

    async def install(self, package: Package) -> tuple[bool, str]:
        """Install one package; (True, "") on success, else (False, a short reason)."""
        async with self._lock:
            with tempfile.TemporaryDirectory(prefix="labbot-pins-") as folder:
                pins = Path(folder) / "constraints.txt"
                ok, frozen = await self.freeze()
                if not ok:
                    return False, f"the runtime's packages could not be listed: {frozen}"
                await asyncio.to_thread(pins.write_text, frozen)
                argv = [
                    "pip", "install", "--quiet", "--python", str(self.python),
                    "--only-binary", ":all:", "--constraint", str(pins),
                    *package.installer_args, package.requirement,
                ]  # fmt: skip
                ok, why = await self._uv(argv)
            if ok:
                log.info("package.installed requirement=%s", package.requirement)
            else:
                log.warning("package.install_failed requirement=%s", package.requirement)
            return ok, why

    async def freeze(self) -> tuple[bool, str]:
        """(True, the runtime's `name==version` lines), or (False, why not)."""
        return await self._uv(["pip", "freeze", "--python", str(self.python)])

    async def _uv(self, args: list[str]) -> tuple[bool, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("UV_", "PIP_", "SSL_", "HTTP", "HTTPS", "NO_PROXY", "PATH", "HOME"))
        }
        env["UV_PYTHON_DOWNLOADS"] = "never"
        process = await asyncio.create_subprocess_exec(
            _uv(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return False, f"it took over {self.timeout:g} s"
        if process.returncode != 0:
            lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
            return False, " ".join(line.strip() for line in lines[-3:])[:400] or "failed"
        return True, out.decode(errors="replace")


class InstallPolicy:
    """Decides whether a module a cell could not import may be installed now, and does it."""

    def __init__(
        self,
        allowlist: Allowlist,
        installer: Installer,
        *,
        per_user_hourly: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowlist = allowlist
        self.installer = installer
        self.per_user_hourly = per_user_hourly
        self.clock = clock
        self._failed: dict[str, tuple[float, str]] = {}
        self._attempts: dict[str, deque[float]] = defaultdict(deque)

    async def decide(self, user: str, module: str) -> tuple[Package | None, str]:
        """Install the package for ``module`` if the rules allow: (the package if it was
        installed, else None; a note for the model, empty when there is nothing to say)."""
        if await asyncio.to_thread(self.installer.has_module, module):
            return None, (
                f"Module {module!r} is installed; the import failed for another reason, so"
                " nothing was installed."
            )
        package = self.allowlist.resolve(module)
        if package is None:
            return None, (
                f"Module {module!r} is not installed and not on the allow-list; allowed packages"
                f" install themselves on import: {', '.join(self.allowlist.names())}."
            )
        now = self.clock()
        failed = self._failed.get(package.requirement)
        if failed and now - failed[0] < FAILURE_MEMORY:
            return None, (
                f"Installing {package.requirement} failed recently ({failed[1]}); it is not"
                " tried again for an hour."
            )
        attempts = self._attempts[user]
        while attempts and now - attempts[0] >= _WINDOW:
            attempts.popleft()
        if len(attempts) >= self.per_user_hourly:
            return None, (
                f"{package.requirement} was not installed: each user may install at most"
                f" {self.per_user_hourly} packages an hour."
            )
        attempts.append(now)
        ok, why = await self.installer.install(package)
        if not ok:
            self._failed[package.requirement] = (self.clock(), why)
            return None, f"Installing {package.requirement} failed: {why}"
        self._failed.pop(package.requirement, None)
        return package, ""
