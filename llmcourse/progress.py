"""Progress bars for every chapter: tqdm's, plus a saved notebook output that says how far the run got.

In a notebook tqdm draws a live widget, and a saved notebook keeps only the text it had when it appeared
("0%| | 0/600"). Here the bar is replaced when it closes by one line, "training: 600/600 done", which is what
the saved notebook shows everywhere. Outside notebooks this is tqdm's own text bar.
"""
from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm as _auto_tqdm

try:
    from tqdm.notebook import tqdm as _notebook_tqdm
except ImportError:  # no ipywidgets: text bars only
    _notebook_tqdm = None


class _FinalState:
    """What a finished bar leaves behind: a line of text that says where the run ended (no widget, so it reads
    the same in a live lab, on GitHub and in an untrusted notebook)."""

    def __init__(self, widget: Any, text: str):
        self.widget, self.text = widget, text

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return {"text/plain": self.text}


if _notebook_tqdm is not None and issubclass(_auto_tqdm, _notebook_tqdm):
    class tqdm(_notebook_tqdm):  # noqa: N801 (tqdm's own name)
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["display"] = False
            super().__init__(*args, **kwargs)
            self._handle = None
            if not self.disable:
                from IPython.display import display
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self) -> None:
            super().close()
            if getattr(self, "_handle", None) is not None:
                done = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
                stopped = "" if not self.total or self.n >= self.total else " (stopped early)"
                self._handle.update(_FinalState(self.container, f"{self.desc or 'progress'}: {done} done{stopped}"))
                self._handle = None
else:
    tqdm = _auto_tqdm

__all__ = ["tqdm"]
