"""Prepares matplotlib.pyplot for the kernel the moment anything imports it: plt.show() is
harmless, and figures the code saved itself are noted (not sent again as figure-N.png)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any


def _ready_pyplot(plt: Any) -> None:
    """Make plt.show() harmless and note which figures the code saved itself (those are not
    sent again as figure-N.png)."""
    import matplotlib.figure

    original = matplotlib.figure.Figure.savefig

    def savefig(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._labbot_saved = True
        return original(self, *args, **kwargs)

    matplotlib.figure.Figure.savefig = savefig
    plt.show = lambda *args, **kwargs: None


class PyplotHook(importlib.abc.MetaPathFinder):
    """Prepares matplotlib.pyplot the moment anything imports it, preloaded or not."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "matplotlib.pyplot":
            return None
        sys.meta_path.remove(self)  # find the real module, once
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                _ready_pyplot(module)

        spec.loader = Loader()
        return spec
