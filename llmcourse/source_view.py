"""Show the package's own code in a lesson, so a learner sees what the classes they use really do (all chapters).

``show_code(GPT.forward)`` displays the source of a function, method or class with syntax colours in JupyterLab
and as plain text everywhere else (a saved notebook keeps both).
"""
from __future__ import annotations

import inspect
import textwrap
from typing import Any

from IPython.display import Code


def source_of(obj: Any) -> str:
    """The source text of a function, method, class or module, without the common leading indentation."""
    try:
        return textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n"
    except (TypeError, OSError) as exc:
        raise TypeError(f"no source code to show for {obj!r}: pass a function, method or class defined in Python "
                        f"(a built-in like torch.matmul is written in C++)") from exc


def show_code(obj: Any) -> Code:
    """The source of ``obj`` as a displayable, syntax-coloured block (make it a cell's last line)."""
    return Code(source_of(obj), language="python")


__all__ = ["source_of", "show_code"]
