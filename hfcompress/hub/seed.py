"""Seed a Hub-compatible server with the offline assets and datasets under their real ids.

Models come from :func:`hfcompress.assets.ensure_asset` (``HuggingFaceTB/SmolLM2-135M-Instruct``,
``sentence-transformers/all-MiniLM-L6-v2``); datasets from a folder laid out as
``<org>/<name>/README.md + data files`` (default ``../shared/hub/datasets``). Uploads go
through the real :class:`huggingface_hub.HfApi`; a repo whose files already match is skipped.
Usage::

    from hfcompress.hub.seed import seed
    seed("http://127.0.0.1:8080", token="...", only=["datasets"])

Stand-ins (:data:`STAND_INS`): public dataset ids the project defaults to whose real data is not
offline here get a sample of our offline text under their id, with a README.md that says so
(e.g. ``NeelNanda/pile-10k``, the default calibration set, holds the English Wikipedia sample).

The token must belong to a user of the orgs ``HuggingFaceTB``, ``sentence-transformers``,
``Salesforce``, ``fixtures``, ``NeelNanda`` and ``openai`` (see :data:`SEED_ORGS`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import HubError, UsageError
from ..io import sha256_file

SEED_ORGS = ("HuggingFaceTB", "sentence-transformers", "Salesforce", "fixtures", "NeelNanda", "openai")
MODEL_IDS = ("HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2",
             "openai/whisper-tiny.en", "fixtures/vit-digits")
IGNORE = [".hfcompress-asset.json", ".*", "**/.*", "*.lock"]
#: Header understood by the hfcompress server: answer uploadMode "lfs" (only sent when Xet is off).
UPLOAD_MODE_HEADER = "X-HFCompress-Upload-Mode"


def default_datasets_dir() -> Path:
    """``$HFCOMPRESS_DATASETS`` or ``<project>/../shared/hub/datasets``."""
    from ..data import local_datasets_dir

    return local_datasets_dir()


def find_dataset_repos(root: Path) -> dict[str, Path]:
    """``{"org/name": folder}`` for every ``root/<org>/<name>/README.md``, plus the :data:`STAND_INS`
    whose source is there (built under the hfcompress cache)."""
    from ..assets import built_dataset_assets

    found = {f"{p.parent.parent.name}/{p.parent.name}": p.parent for p in sorted(Path(root).glob("*/*/README.md"))}
    for repo_id, folder in built_dataset_assets().items():  # built by `hfcompress assets` (speech, digits)
        found.setdefault(repo_id, folder)
    for repo_id, source in STAND_INS.items():
        if repo_id not in found and source in found:
            found[repo_id] = build_stand_in(repo_id, found[source])
    return found


#: Public dataset id -> the offline dataset whose text stands in for it on a local Hub.
STAND_INS = {"NeelNanda/pile-10k": "fixtures/enwiki-sample"}

STAND_IN_README = """---
license: cc-by-sa-3.0
language: [en]
pretty_name: "Stand-in for {repo_id}: English Wikipedia sample"
tags: [hfcompress-stand-in]
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# {repo_id} (offline stand-in)

**This is not {repo_id}.** It is a stand-in that `hfcompress hub seed` puts on a local,
offline Hub under the id hfcompress uses as its default calibration / training text, so
that commands which rely on the default run without internet.

- Content: a copy of `{source}` — {rows} English Wikipedia articles, one per row, column
  `text` (plus `title`), split `train` — not the Pile documents of the real dataset.
- The real `{repo_id}` on huggingface.co holds the first 10,000 documents of the Pile
  (column `text`, split `train`); a model calibrated on this stand-in is calibrated on
  Wikipedia text, and its hfcompress.json names `{repo_id}` all the same.
- License: the text is Wikipedia's (CC BY-SA 3.0), as in `{source}`.
"""


def stand_in_dir() -> Path:
    """Where stand-in dataset folders are built (``$HFCOMPRESS_CACHE`` or ``~/.cache/hfcompress``)."""
    return Path(os.environ.get("HFCOMPRESS_CACHE", Path.home() / ".cache" / "hfcompress")) / "stand-ins"


def build_stand_in(repo_id: str, source: Path) -> Path:
    """The folder of stand-in ``repo_id``: ``source``'s data files + a README that says what it is."""
    import shutil

    folder = stand_in_dir() / repo_id
    files = [p for p in sorted((source / "data").glob("*")) if p.is_file()]
    rows = _count_rows(files)
    readme = STAND_IN_README.format(repo_id=repo_id, source=f"{source.parent.name}/{source.name}", rows=rows)
    wanted = {f"data/train-{i:05d}-of-{len(files):05d}{p.suffix}": p for i, p in enumerate(files)}
    current = folder.is_dir() and (folder / "README.md").is_file() and (folder / "README.md").read_text() == readme \
        and all((folder / rel).is_file() and (folder / rel).stat().st_size == p.stat().st_size
                for rel, p in wanted.items())
    if current:
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    for rel, p in wanted.items():
        shutil.copyfile(p, tmp / rel)
    (tmp / "README.md").write_text(readme)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built it at the same moment: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "README.md").is_file():
            raise
    return folder


def _count_rows(files: list[Path]) -> int | str:
    try:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(p).metadata.num_rows for p in files if p.suffix == ".parquet")
    except Exception:  # noqa: BLE001 - the count is only prose in the README
        return "all the"


def _git_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _local_files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def is_up_to_date(api, repo_id: str, repo_type: str, folder: Path) -> bool:
    """True when every local file exists remotely (on main) with the same content."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        remote = {e.path: e for e in api.list_repo_tree(repo_id, repo_type=repo_type, recursive=True)
                  if hasattr(e, "blob_id")}
    except HfHubHTTPError:
        return False
    for rel, path in _local_files(folder).items():
        e = remote.get(rel)
        if e is None or e.size != path.stat().st_size:
            return False
        if e.lfs is not None:
            if e.lfs.sha256 != sha256_file(path):
                return False
        elif e.blob_id != _git_sha1(path):
            return False
    return True


def wait_for_asset_build(repo_id: str, timeout_s: float = 1800.0) -> Path:
    """:func:`ensure_asset`, but first wait for a build already running in another process."""
    from ..assets import asset_path, ensure_asset

    folder = asset_path(repo_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tmps = list(folder.parent.glob(f".{folder.name}.tmp-*")) if folder.parent.is_dir() else []
        # A temp folder touched in the last 10 minutes means a build is in progress elsewhere.
        if not any(time.time() - t.stat().st_mtime < 600 for t in tmps if t.exists()):
            break
        time.sleep(5)
    return ensure_asset(repo_id)


def _api(endpoint: str, token: str):
    from huggingface_hub import HfApi
    from huggingface_hub.utils._runtime import is_xet_available

    headers = {} if is_xet_available() else {UPLOAD_MODE_HEADER: "lfs"}
    return HfApi(endpoint=endpoint, token=token, headers=headers, library_name="hfcompress-seed")


def seed_repo(api, repo_id: str, folder: Path, repo_type: str, log=print) -> bool:
    """Upload ``folder`` as ``repo_id`` in one commit unless already up to date; True if uploaded."""
    api.create_repo(repo_id, repo_type=repo_type, exist_ok=True)
    if is_up_to_date(api, repo_id, repo_type, folder):
        log(f"seed: {repo_type} {repo_id} up to date")
        return False
    t = time.monotonic()
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, ignore_patterns=IGNORE,
                      commit_message=f"Seed {repo_id} from the hfcompress offline assets")
    log(f"seed: {repo_type} {repo_id} uploaded in {time.monotonic() - t:.1f}s")
    return True


def seed(endpoint: str, token: str, *, only: Iterable[str] = ("models", "datasets"),
         datasets_dir: str | Path | None = None, log=print) -> list[str]:
    """Seed ``endpoint``; ``only`` holds ``"models"``, ``"datasets"`` and/or repo ids. Returns seeded ids."""
    from huggingface_hub.errors import HfHubHTTPError

    if not token:
        raise HubError("seeding needs a token of a user in the orgs " + ", ".join(SEED_ORGS) +
                       ": pass --token or set HF_TOKEN")
    wanted = set(only)
    ddir = Path(datasets_dir) if datasets_dir else default_datasets_dir()
    datasets = find_dataset_repos(ddir) if ddir.is_dir() else {}
    plan: list[tuple[str, str]] = []
    for item in sorted(wanted):
        if item == "models":
            plan += [(m, "model") for m in MODEL_IDS]
        elif item == "datasets":
            if not datasets:
                raise UsageError(f"no dataset repos (<org>/<name>/README.md) under {ddir}: pass --datasets DIR")
            plan += [(d, "dataset") for d in datasets]
        elif item in MODEL_IDS:
            plan.append((item, "model"))
        elif item in datasets:
            plan.append((item, "dataset"))
        else:
            raise UsageError(f"unknown seed item {item!r}: use models, datasets, or one of "
                             f"{', '.join(list(MODEL_IDS) + list(datasets))}")
    api = _api(endpoint, token)
    done = []
    for repo_id, repo_type in dict.fromkeys(plan):
        folder = wait_for_asset_build(repo_id) if repo_type == "model" else datasets[repo_id]
        try:
            seed_repo(api, repo_id, folder, repo_type, log=log)
        except HfHubHTTPError as exc:
            raise HubError(f"seeding {repo_id} failed: {str(exc).splitlines()[0]}") from exc
        done.append(repo_id)
    return done


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", default=None, help="server URL (default $HF_ENDPOINT)")
    p.add_argument("--token", default=None, help="write token of a user in the seed orgs (default $HF_TOKEN); "
                   "VISIBLE to other users in `ps`: prefer HF_TOKEN or --token-file")
    p.add_argument("--datasets", default=None, help="datasets folder (default ../shared/hub/datasets)")
    p.add_argument("--only", nargs="+", default=["models", "datasets"], metavar="WHAT",
                   help="models, datasets and/or repo ids (default: models datasets)")


def run(args: argparse.Namespace) -> int:
    # Xet cannot talk to a local server: large files go through the LFS batch API instead.
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    from ..secrets import register_secret

    endpoint = args.endpoint or os.environ.get("HF_ENDPOINT")
    if not endpoint:
        raise UsageError("no server: pass --endpoint URL or set HF_ENDPOINT")
    token = args.token or os.environ.get("HF_TOKEN")
    register_secret(token)
    seed(endpoint, token or "", only=args.only, datasets_dir=args.datasets)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hfcompress.hub.seed`` (a light entry point that avoids the full CLI)."""
    p = argparse.ArgumentParser(prog="python -m hfcompress.hub.seed", description=__doc__.splitlines()[0])
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except (HubError, UsageError) as exc:
        from ..secrets import redact

        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
