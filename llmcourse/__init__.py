"""llmcourse: the companion package of the course "How large language models work".

The lessons in ``notebooks/`` import from here instead of redefining things.
Start with the three helpers every chapter uses::

    from llmcourse import fast_mode, get_device, seed_everything
"""
from llmcourse.config import fast_mode, scaled
from llmcourse.device import get_device
from llmcourse.seed import seed_everything

__version__ = "0.1.0"

__all__ = ["fast_mode", "scaled", "get_device", "seed_everything", "__version__"]
