"""Family packages that are also their verb: ``hfcompress.prune(model, config)``.

``import hfcompress`` imports some family packages (their checkpoint formats register
with transformers), which binds ``hfcompress.prune`` to the *package* rather than the
function. Making the package callable keeps both spellings working::

    make_package_callable(__name__, "prune")   # at the bottom of hfcompress/prune/__init__.py
"""

from __future__ import annotations

import sys
import types


def make_package_callable(module_name: str, verb: str) -> None:
    """Calling the package ``module_name`` calls its attribute ``verb``."""

    class _VerbPackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, verb)(*args, **kwargs)

    sys.modules[module_name].__class__ = _VerbPackage
