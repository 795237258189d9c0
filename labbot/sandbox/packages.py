"""The package allow-list (PyPI name ↔ import names) and installs into the runtime env only."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# PyTorch's CPU wheels live on its own index; PyPI's Linux wheels pull several GB of CUDA.
_TORCH_CPU = (
    "--index-url",
    "https://download.pytorch.org/whl/cpu",
    "--extra-index-url",
    "https://pypi.org/simple",
    "--index-strategy",
    "unsafe-best-match",
)


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
    _p("torch", args=_TORCH_CPU),
    _p("torchvision", args=_TORCH_CPU),
    _p("tensorflow-cpu", "tensorflow", "keras"),
)


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
    """Installs allowed packages into the runtime venv, one at a time, with a timeout."""

    def __init__(self, runtime_venv: Path, *, timeout: float) -> None:
        self.python = runtime_venv / "bin" / "python"
        self.timeout = timeout
        self._lock = asyncio.Lock()

    async def install(self, package: Package) -> tuple[bool, str]:
        """Install one package; (True, "") on success, else (False, a short reason)."""
        async with self._lock:
            argv = [
                _uv(),
                "pip",
                "install",
                "--quiet",
                "--python",
                str(self.python),
                *package.installer_args,
                package.requirement,
            ]
            env = {
                k: v
                for k, v in os.environ.items()
                if k.startswith(
                    ("UV_", "PIP_", "SSL_", "HTTP", "HTTPS", "NO_PROXY", "PATH", "HOME")
                )
            }
            env["UV_PYTHON_DOWNLOADS"] = "never"
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
            )
            try:
                async with asyncio.timeout(self.timeout):
                    _, err = await process.communicate()
            except TimeoutError:
                process.kill()
                await process.wait()
                return False, f"installing {package.requirement} took over {self.timeout:g} s"
            if process.returncode != 0:
                last = err.decode(errors="replace").strip().splitlines()[-1:] or ["failed"]
                log.warning("package.install_failed requirement=%s", package.requirement)
                return False, last[0][:300]
            log.info("package.installed requirement=%s", package.requirement)
            return True, ""
