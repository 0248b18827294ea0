"""Budget-driven compression: ``hfcompress.search(model, method=..., budget=...)``.

An EvoPress-style evolutionary search (Sieberling et al., ICML 2025) over per-layer sparsity
levels (Wanda / SparseGPT), per-layer GPTQ bit widths (``bits=`` / ``size=`` budgets) or the set
of blocks to drop, meeting the budget exactly (bit widths: exactly when a mix of the levels
reaches it, else the largest total not above it) and scored by KL divergence to the dense model
on calibration text. See docs/SEARCH.md.
"""

from .budget import Budget, SearchConfig, parse_budget
from .run import SearchResult, search

__all__ = ["Budget", "SearchConfig", "SearchResult", "parse_budget", "search"]

from .._verbs import make_package_callable  # noqa: E402

make_package_callable(__name__, "search")
