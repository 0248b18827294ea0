"""The bad-input catalogue: every user mistake gives ONE line that names the problem (and the
fix), a non-zero exit code, no traceback (``--debug`` shows one), and writes nothing.

CLI cases run in-process through ``hfcompress.cli.main`` on tiny random models; Hub cases go
through the session's local Hub server (``hub_server``). Cases that need a stage method use the
real registered method and are skipped (never faked) when it is not registered.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hfcompress import errors
from hfcompress.cli import main
from hfcompress.registry import methods
from hfcompress.testing.hub import hub_environment

R_ZERO = "stages:\n  - prune: {method: magnitude, sparsity: 0.5}\n"
RECIPES = {
    "magnitude": R_ZERO,
    "sparsity-1": "stages:\n  - prune: {method: magnitude, sparsity: 1.0}\n",
    "sparsity-neg": "stages:\n  - prune: {method: magnitude, sparsity: -0.1}\n",
    "nm-4-4": "stages:\n  - prune: {method: magnitude, pattern: '4:4'}\n",
    "nm-2-3": "stages:\n  - prune: {method: wanda, pattern: '2:3'}\n",
    "nm-3-5-magnitude": "stages:\n  - prune: {method: magnitude, pattern: '3:5'}\n",
    "heads-all": "stages:\n  - prune: {method: magnitude, structured: heads, sparsity: 0.9}\n",
    "quant-int3": "stages:\n  - quantize: {method: quanto-int3}\n",
    "group-48": "stages:\n  - quantize: {method: quanto-int4, group_size: 48}\n",
    "unknown-stage": "stages:\n  - polish: {method: magnitude}\n",
    "unknown-key": "stages:\n  - prune: {method: magnitude, sparsty: 0.5}\n",
    "wrong-type": "stages:\n  - prune: {method: magnitude, sparsity: half}\n",
    "empty-stages": "stages: []\n",
    "bad-yaml": "stages:\n  - prune: {method: magnitude\n",
    "cal-missing": "stages:\n  - prune:\n      method: wanda\n      calibration: {dataset: fixtures/no-such-dataset, "
                   "samples: 2, seq_len: 32}\n",
    "cal-column": "stages:\n  - prune:\n      method: wanda\n      calibration: {dataset: fixtures/enwiki-sample, "
                  "text_column: body, samples: 2, seq_len: 32}\n",
    "cal-few-tokens": "stages:\n  - prune:\n      method: wanda\n      calibration: {dataset: '{tinyds}', "
                      "samples: 2, seq_len: 64}\n",
    "cal-too-long": "stages:\n  - prune:\n      method: wanda\n      calibration: {dataset: '{tinyds}', "
                    "samples: 2, seq_len: 4096}\n",
    "eval-empty-split": "stages:\n  - evaluate: {method: perplexity, dataset: '{emptyds}', split: test}\n",
    "eval-ppl-classifier": "stages:\n  - evaluate: {method: perplexity, dataset: '{emptyds}', split: train}\n",
    # bounded loading: a 600-byte "billion laughs" recipe grew the process to 2.6 GB
    "billion-laughs": "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
                              for i in range(9)) + "stages: [*l8]\n",
    "anchor": "stages:\n  - prune: &p {method: magnitude, sparsity: 0.5}\n",
    "duplicate-key": "stages:\n  - prune:\n      method: magnitude\n      sparsity: 0.5\n      sparsity: 0.9\n",
    "duplicate-top-key": "stages:\n  - prune: {method: magnitude, sparsity: 0.5}\nstages: []\n",
    "deep-flow": "stages: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-block": "stages:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(60)),
    "many-values": "stages: [" + ", ".join(["1"] * 2500) + "]\n",
    "oversized": "name: " + "x" * 70_000 + "\nstages: []\n",
}
#: Recipes that are not text: written as bytes.
RAW_RECIPES = {
    "latin1": "stages:\n  - prune: {method: magnitude, sparsity: 0.5}  # déjà\n".encode("latin-1"),
    "binary": bytes(range(256)) * 4,
}


@dataclass
class Case:
    id: str
    argv: list[str]
    code: int
    fragments: tuple[str, ...]
    needs: tuple[str, str] | None = None  # (family, method) that must be registered
    hub: bool = False  # goes through the local Hub server
    token: bool = True  # with HF_TOKEN set (hub cases)
    argparse: bool = False  # rejected by argparse itself (no traceback even with --debug)
    offline: bool = False  # with HF_HUB_OFFLINE=1 (the Hub cannot be reached)


def r(name: str) -> str:
    return "{recipe:" + name + "}"


OUT = "{out}"
CLI_CASES = [
    # -- models and repos
    Case("unknown-model-id", ["compress", "hfc-tester/no-such-model", "-r", r("magnitude"), "-o", OUT], 1,
         ("hfc-tester/no-such-model not found on the Hub", "HF_TOKEN"), hub=True),
    Case("private-repo-without-token", ["compress", "{private}", "-r", r("magnitude"), "-o", OUT], 1,
         ("not found on the Hub (or it is private)", "set HF_TOKEN"), hub=True, token=False),
    Case("pull-private-without-token", ["pull", "{private}", "--no-load", "--output", OUT], 1,
         ("not found (or it is private", "HF_TOKEN"), hub=True, token=False),
    Case("pull-with-invalid-token", ["pull", "{private}", "--no-load", "--token", "not-a-valid-token"], 1,
         ("refused the token", "HTTP 401", "check HF_TOKEN"), hub=True),
    Case("folder-not-a-model", ["compress", "{notmodel}", "-r", r("magnitude"), "-o", OUT], 1,
         ("is not a model folder (no config.json)",)),
    Case("model-path-is-a-file", ["compress", "{afile}", "-r", r("magnitude"), "-o", OUT], 1,
         ("is a file, not a model folder",)),
    Case("model-folder-missing", ["compress", "{tmp}/nope/model", "-r", r("magnitude"), "-o", OUT], 1,
         ("does not exist",)),
    Case("pickle-only-checkpoint", ["compress", "{pickle}", "-r", r("magnitude"), "-o", OUT], 1,
         ("no safetensors weights", "allow_pickle=True / --allow-pickle")),
    Case("revision-on-local-folder", ["compress", "{llama}", "--revision", "v1", "-r", r("magnitude"), "-o", OUT],
         2, ("applies to Hub repo ids",)),
    Case("unknown-task", ["compress", "{llama}", "--task", "poetry", "-r", r("magnitude"), "-o", OUT], 2,
         ("unknown task 'poetry'",)),
    # -- method / architecture / values
    Case("sparsity-1", ["compress", "{llama}", "-r", r("sparsity-1"), "-o", OUT], 2,
         ("stages[0].prune.sparsity", "less than 1"), needs=("prune", "magnitude")),
    Case("sparsity-negative", ["compress", "{llama}", "-r", r("sparsity-neg"), "-o", OUT], 2,
         ("greater than or equal to 0",), needs=("prune", "magnitude")),
    Case("nm-n-not-below-m", ["compress", "{llama}", "-r", r("nm-4-4"), "-o", OUT], 2,
         ("N must be smaller than M", "2:4"), needs=("prune", "magnitude")),
    Case("nm-m-not-dividing-width", ["compress", "{llama}", "-r", r("nm-2-3"), "-o", OUT], 2,
         ("M=3 does not divide the input width", "choose another M"), needs=("prune", "wanda")),
    Case("nm-m5-not-dividing-width", ["compress", "{llama}", "-r", r("nm-3-5-magnitude"), "-o", OUT], 2,
         ("M=5 does not divide",), needs=("prune", "magnitude")),
    Case("structured-removes-every-head", ["compress", "{llama}", "-r", r("heads-all"), "-o", OUT], 2,
         ("would remove every one of the 2", "smaller --sparsity"), needs=("prune", "magnitude")),
    Case("cli-prune-sparsity-1.5", ["prune", "{llama}", "--method", "magnitude", "--sparsity", "1.5", "-o", OUT], 2,
         ("sparsity", "less than 1"), needs=("prune", "magnitude")),
    Case("cli-prune-nm-n-not-below-m", ["prune", "{llama}", "--method", "magnitude", "--pattern", "4:4", "-o", OUT],
         2, ("N must be smaller than M",), needs=("prune", "magnitude")),
    Case("cli-prune-nm-m-not-dividing", ["prune", "{llama}", "--method", "magnitude", "--pattern", "2:3", "-o", OUT],
         2, ("M=3 does not divide the input width",), needs=("prune", "magnitude")),
    Case("cli-prune-every-head", ["prune", "{llama}", "--method", "magnitude", "--structured", "heads",
                                  "--sparsity", "0.9", "-o", OUT], 2, ("would remove every one",),
         needs=("prune", "magnitude")),
    Case("cli-prune-calibration-dtype-magnitude", ["prune", "{llama}", "--method", "magnitude", "--sparsity", "0.5",
                                                   "--calibration-dtype", "bfloat16", "-o", OUT], 2,
         ("calibration_dtype applies to the calibrated", "wanda, sparsegpt"), needs=("prune", "magnitude")),
    Case("quant-bits-not-offered-recipe", ["compress", "{llama}", "-r", r("quant-int3"), "-o", OUT], 2,
         ("quantize method 'quanto-int3' is not available", "quanto-int4"), needs=("quantize", "quanto-int4")),
    Case("quant-bits-not-offered-cli", ["quantize", "{llama}", "--method", "quanto-int3", "-o", OUT], 2,
         ("invalid choice: 'quanto-int3'",), needs=("quantize", "quanto-int4"), argparse=True),
    Case("quant-flag-for-other-method", ["quantize", "{llama}", "--method", "quanto-int4", "--bits", "3", "-o", OUT],
         2, ("--bits does not apply to --method quanto-int4",), needs=("quantize", "quanto-int4")),
    Case("quant-group-size-not-dividing", ["compress", "{llama}", "-r", r("group-48"), "-o", OUT], 2,
         ("group size 48 does not divide",), needs=("quantize", "quanto-int4")),
    # -- recipes
    Case("recipe-unknown-stage", ["compress", "{llama}", "-r", r("unknown-stage"), "-o", OUT], 2,
         ("r-unknown-stage.yaml:2:", "unknown stage 'polish'", "use one of prune")),
    Case("recipe-unknown-key", ["compress", "{llama}", "-r", r("unknown-key"), "-o", OUT], 2,
         ("unknown key 'sparsty'", "valid keys:"), needs=("prune", "magnitude")),
    Case("recipe-wrong-type", ["compress", "{llama}", "-r", r("wrong-type"), "-o", OUT], 2,
         ("stages[0].prune.sparsity", "valid number"), needs=("prune", "magnitude")),
    Case("recipe-empty-stages", ["compress", "{llama}", "-r", r("empty-stages"), "-o", OUT], 2,
         ("a recipe needs at least one stage",)),
    Case("recipe-invalid-yaml", ["compress", "{llama}", "-r", r("bad-yaml"), "-o", OUT], 2, ("not valid YAML",)),
    Case("recipe-file-missing", ["compress", "{llama}", "-r", "{tmp}/missing.yaml", "-o", OUT], 2,
         ("recipe file", "not found")),
    Case("recipe-billion-laughs", ["compress", "{llama}", "-r", r("billion-laughs"), "-o", OUT], 2,
         ("r-billion-laughs.yaml:1:", "anchors and aliases", "write the values out")),
    Case("recipe-anchor", ["compress", "{llama}", "-r", r("anchor"), "-o", OUT], 2,
         ("r-anchor.yaml:2:", "anchors and aliases")),
    Case("recipe-duplicate-key", ["compress", "{llama}", "-r", r("duplicate-key"), "-o", OUT], 2,
         ("r-duplicate-key.yaml:5:", "duplicate key 'sparsity' (first on line 4)", "keep only one")),
    Case("recipe-duplicate-top-key", ["compress", "{llama}", "-r", r("duplicate-top-key"), "-o", OUT], 2,
         ("r-duplicate-top-key.yaml:3:", "duplicate key 'stages' (first on line 1)")),
    Case("recipe-nested-5000-deep", ["compress", "{llama}", "-r", r("deep-flow"), "-o", OUT], 2,
         ("r-deep-flow.yaml:1:", "nested more than 32 levels deep")),
    Case("recipe-nested-block-deep", ["compress", "{llama}", "-r", r("deep-block"), "-o", OUT], 2,
         ("nested more than 32 levels deep",)),
    Case("recipe-too-many-values", ["compress", "{llama}", "-r", r("many-values"), "-o", OUT], 2,
         ("more than 2000 values",)),
    Case("recipe-oversized", ["compress", "{llama}", "-r", r("oversized"), "-o", OUT], 2,
         ("r-oversized.yaml", "larger than the 65536 bytes", "right file")),
    Case("recipe-not-utf8", ["compress", "{llama}", "-r", r("latin1"), "-o", OUT], 2,
         ("r-latin1.yaml:2:", "not UTF-8 text (byte 0xe9", "save the recipe as UTF-8")),
    Case("recipe-binary", ["compress", "{llama}", "-r", r("binary"), "-o", OUT], 2,
         ("r-binary.yaml", "not UTF-8 text")),
    # -- broken model files: one line naming the file and the fix (never `unexpected failure`)
    Case("safetensors-truncated", ["compress", "{st-truncated}", "-r", r("magnitude"), "-o", OUT], 1,
         ("model.safetensors is not a valid safetensors file", "lies outside the file", "re-download")),
    Case("safetensors-garbage", ["compress", "{st-garbage}", "-r", r("magnitude"), "-o", OUT], 1,
         ("model.safetensors is not a valid safetensors file", "over the 100 MB limit")),
    Case("safetensors-empty", ["compress", "{st-empty}", "-r", r("magnitude"), "-o", OUT], 1,
         ("model.safetensors is not a valid safetensors file (empty file)",)),
    Case("safetensors-oversized-header", ["compress", "{st-huge-header}", "-r", r("magnitude"), "-o", OUT], 1,
         ("header length 1099511627776 bytes is over the 100 MB limit",)),
    Case("safetensors-header-beyond-file", ["compress", "{st-short-header}", "-r", r("magnitude"), "-o", OUT], 1,
         ("is beyond the file size",)),
    Case("safetensors-header-not-json", ["compress", "{st-bad-json}", "-r", r("magnitude"), "-o", OUT], 1,
         ("header is not valid JSON",)),
    Case("safetensors-wrong-byte-count", ["compress", "{st-wrong-size}", "-r", r("magnitude"), "-o", OUT], 1,
         ("not the", "its shape", "need")),
    Case("safetensors-symlink-to-text", ["compress", "{st-symlink}", "-r", r("magnitude"), "-o", OUT], 1,
         ("model.safetensors (a link to", "notes.txt) is not a valid safetensors file")),
    Case("safetensors-shard-missing", ["compress", "{st-missing-shard}", "-r", r("magnitude"), "-o", OUT], 1,
         ("model.safetensors.index.json names model-00002-of-00002.safetensors, which is missing",)),
    Case("config-shapes-not-weights", ["compress", "{cfg-shapes}", "-r", r("magnitude"), "-o", OUT], 1,
         ("config.json of", "does not match its weights", "weight(s) differ", "weights [", "config [",
          "use the config.json saved with these weights")),
    Case("config-not-utf8", ["compress", "{cfg-latin1}", "-r", r("magnitude"), "-o", OUT], 1,
         ("config.json: not UTF-8 text", "re-download")),
    Case("config-nested-deep", ["compress", "{cfg-deep}", "-r", r("magnitude"), "-o", OUT], 1,
         ("config.json: nested more than 100 levels deep",)),
    Case("config-duplicate-key", ["compress", "{cfg-dup}", "-r", r("magnitude"), "-o", OUT], 1,
         ("config.json: duplicate key 'hidden_size'",)),
    Case("tokenizer-json-corrupt", ["compress", "{tok-json}", "-r", r("magnitude"), "-o", OUT], 1,
         ("tokenizer.json: not valid JSON", "restore the tokenizer")),
    Case("tokenizer-config-corrupt", ["compress", "{tok-config}", "-r", r("magnitude"), "-o", OUT], 1,
         ("tokenizer_config.json: not valid JSON",)),
    Case("report-json-damaged", ["card", "{bad-report}"], 2, ("hfcompress.json: nested more than",)),
    # -- data
    Case("calibration-dataset-missing", ["compress", "{llama}", "-r", r("cal-missing"), "-o", OUT], 2,
         ("fixtures/no-such-dataset",), needs=("prune", "wanda"), hub=True),
    Case("calibration-column-missing", ["compress", "{llama}", "-r", r("cal-column"), "-o", OUT], 2,
         ("has no column 'body'", "available columns are"), needs=("prune", "wanda"), hub=True),
    Case("too-few-calibration-tokens", ["compress", "{llama}", "-r", r("cal-few-tokens"), "-o", OUT], 2,
         ("tokens, fewer than seq_len=64", "lower --seq-len"), needs=("prune", "wanda")),
    Case("calibration-longer-than-model", ["compress", "{llama}", "-r", r("cal-too-long"), "-o", OUT], 2,
         ("exceeds the model's max_position_embeddings 128",), needs=("prune", "wanda")),
    Case("evaluation-split-empty", ["compress", "{llama}", "-r", r("eval-empty-split"), "-o", OUT], 2,
         ("split 'test' is empty", "choose another split"), needs=("evaluate", "perplexity")),
    Case("evaluation-split-empty-cli", ["evaluate", "{llama}", "--dataset", "{emptyds}", "--split", "test",
                                        "--metric", "perplexity", "--output", "{out}.json"], 2,
         ("split 'test' is empty",), needs=("evaluate", "perplexity")),
    Case("perplexity-on-a-classifier", ["compress", "{bert}", "-r", r("eval-ppl-classifier"), "-o", OUT], 1,
         ("perplexity needs a causal LM",), needs=("evaluate", "perplexity")),
    # -- outputs
    Case("output-is-input", ["compress", "{llama}", "-r", r("magnitude"), "-o", "{llama}"], 1,
         ("is the input model folder", "choose a folder outside")),
    Case("output-inside-input", ["compress", "{llama}", "-r", r("magnitude"), "-o", "{llama}/sub"], 1,
         ("inside it",)),
    Case("output-contains-input", ["compress", "{llama}", "-r", r("magnitude"), "-o", "{models}"], 1,
         ("contains the input model",)),
    Case("existing-output-no-overwrite", ["compress", "{llama}", "-r", r("magnitude"), "-o", "{existing}"], 1,
         ("already exists: pass --overwrite",)),
    Case("output-is-a-file", ["compress", "{llama}", "-r", r("magnitude"), "-o", "{afile}"], 1,
         ("exists and is a file",)),
    Case("output-below-a-file", ["compress", "{llama}", "-r", r("magnitude"), "-o", "{afile}/out"], 1,
         ("cannot create output folder", "afile is a file, not a folder", "whose parents are folders")),
    Case("output-two-below-a-file", ["compress", "{llama}", "-r", r("magnitude"), "-o", "{afile}/a/out"], 1,
         ("afile is a file, not a folder",)),
    Case("pull-output-below-a-file", ["pull", "hfc-tester/any-model", "--no-load", "--output", "{afile}/out"], 1,
         ("afile is a file, not a folder",)),
    # -- flags validated by a config class: one line naming the flag (not pydantic's text)
    Case("cli-samples-zero", ["prune", "{llama}", "--method", "wanda", "--sparsity", "0.5", "--calibration",
                              "{tinyds}", "--samples", "0", "-o", OUT], 2,
         ("--samples: Input should be greater than or equal to 1",),
         needs=("prune", "wanda")),
    Case("cli-samples-negative", ["prune", "{llama}", "--method", "wanda", "--sparsity", "0.5", "--calibration",
                                  "{tinyds}", "--samples", "-3", "-o", OUT], 2, ("--samples: Input should be greater than or equal to 1",),
         needs=("prune", "wanda")),
    Case("cli-seq-len-zero", ["prune", "{llama}", "--method", "wanda", "--sparsity", "0.5", "--calibration",
                              "{tinyds}", "--seq-len", "0", "-o", OUT], 2, ("--seq-len: Input should be greater than or equal to 8",),
         needs=("prune", "wanda")),
    Case("cli-quantize-seq-len-negative", ["quantize", "{llama}", "--method", "gptq", "--calibration", "{tinyds}",
                                           "--seq-len", "-1", "-o", OUT], 2,
         ("--seq-len: Input should be greater than or equal to 8",), needs=("quantize", "gptq")),
    Case("private-without-push", ["compress", "{llama}", "-r", r("magnitude"), "-o", OUT, "--private"], 2,
         ("--private only applies with --push-to-hub",)),
    Case("bad-dtype", ["compress", "{llama}", "-r", r("magnitude"), "-o", OUT, "--dtype", "int3"], 2,
         ("invalid choice: 'int3'",), argparse=True),
    # -- hub
    Case("push-without-token", ["push", "{llama}", "hfc-tester/never"], 1, ("no Hub token", "set HF_TOKEN"),
         hub=True, token=False),
    Case("compress-push-without-token", ["compress", "{llama}", "-r", r("magnitude"), "-o", OUT,
                                         "--push-to-hub", "hfc-tester/never"], 1, ("no Hub token",),
         hub=True, token=False),
    Case("push-folder-without-weights", ["push", "{noweights}", "hfc-tester/never"], 2,
         ("is not a model folder: no weights",)),
    Case("push-bad-repo-id", ["push", "{llama}", "not a repo"], 2, ("must look like namespace/name",)),
    Case("push-to-foreign-namespace", ["push", "{llama}", "someone-else/model"], 1,
         ("HTTP 403", "namespace"), hub=True),
    Case("pull-missing-revision", ["pull", "{public}", "--revision", "no-such-branch", "--no-load"], 1,
         ("revision 'no-such-branch' not found", "check --revision"), hub=True),
    Case("pull-endpoint-control-char", ["pull", "hfc-tester/any-model", "--no-load", "--endpoint", "\x1f"], 2,
         ("is not an http(s) URL",)),
    Case("push-endpoint-not-http", ["push", "{llama}", "hfc-tester/x", "--endpoint", "ftp://example.org"], 2,
         ("is not an http(s) URL",), hub=True),
    Case("pull-unknown-repo", ["pull", "hfc-tester/no-such-model", "--no-load"], 1, ("not found",), hub=True),
    Case("hub-offline-compress", ["compress", "hfc-tester/any-model", "-r", r("magnitude"), "-o", OUT], 1,
         ("cannot reach the Hub", "hfc-tester/any-model is not in the local cache", "HF_ENDPOINT"), offline=True),
    Case("hub-offline-pull", ["pull", "hfc-tester/any-model", "--no-load", "--output", OUT], 1,
         ("cannot reach the Hub", "hfc-tester/any-model is not in the local cache"), offline=True),
    Case("pull-output-not-empty", ["pull", "{public}", "--no-load", "--output", "{existing}"], 2,
         ("exists and is not empty",), hub=True),
    # push refuses pickle files before any network call (the endpoint is a closed port)
    Case("push-pickle-beside-safetensors", ["push", "{with-pickle}", "hfc-tester/never", "--endpoint",
                                            "http://127.0.0.1:9"], 2,
         ("holds pickle files (pytorch_model.bin)", "run code when loaded", "--allow-pickle")),
    Case("push-pickle-in-subfolder", ["push", "{nested-pickle}", "hfc-tester/never", "--endpoint",
                                      "http://127.0.0.1:9"], 2,
         ("extra/optimizer.pt", "extra/state.pkl", "--allow-pickle")),
    # pull is atomic, loading included: a pull that fails leaves no --output folder
    Case("pull-pickle-only-repo", ["pull", "{pickle-repo}", "--output", OUT], 1,
         ("no safetensors weights", "--allow-pickle"), hub=True),
    Case("pull-broken-tokenizer-repo", ["pull", "{badtok-repo}", "--output", OUT], 1,
         ("tokenizer.json: not valid JSON",), hub=True),
    Case("pull-truncated-weights-repo", ["pull", "{truncated-repo}", "--output", OUT], 1,
         ("model.safetensors is not a valid safetensors file",), hub=True),
    # tokens: --token-file (not visible in ps)
    Case("token-file-missing", ["push", "{llama}", "hfc-tester/never", "--token-file", "{tmp}/no-token"], 2,
         ("--token-file", "cannot be read", "give a file holding the Hub token")),
    Case("token-file-empty", ["pull", "hfc-tester/any-model", "--no-load", "--token-file", "{afile}.empty"], 2,
         ("does not hold a token",)),
    Case("token-and-token-file", ["push", "{llama}", "hfc-tester/never", "--token", "x", "--token-file",
                                  "{afile}"], 2, ("give --token-file or --token, not both",)),
    Case("pull-bad-token-file-token", ["pull", "{private}", "--no-load", "--token-file", "{bad-token-file}"], 1,
         ("refused the token", "HTTP 401"), hub=True, token=False),
]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """Tiny models, broken folders, local datasets and recipes the cases point at."""
    import torch

    from hfcompress.testing.models import save_tiny, tiny_model

    root = tmp_path_factory.mktemp("catalogue")
    models = root / "models"
    w = {"models": str(models), "llama": str(save_tiny("llama", models / "llama")),
         "bert": str(save_tiny("bert", models / "bert")), "t5": str(save_tiny("t5", models / "t5"))}
    (root / "notmodel").mkdir()
    (root / "notmodel" / "weights.txt").write_text("no config here")
    w["notmodel"] = str(root / "notmodel")
    (root / "afile").write_text("x")
    w["afile"] = str(root / "afile")
    noweights = root / "noweights"
    noweights.mkdir()
    (noweights / "config.json").write_text(json.dumps({"model_type": "llama"}))
    w["noweights"] = str(noweights)
    pickle_dir = root / "pickle-model"
    pickle_dir.mkdir()
    model = tiny_model("llama")
    model.config.save_pretrained(pickle_dir)
    torch.save(model.state_dict(), pickle_dir / "pytorch_model.bin")
    w["pickle"] = str(pickle_dir)
    existing = root / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("previous output")
    w["existing"] = str(existing)
    tiny = root / "tinyds"
    tiny.mkdir()
    (tiny / "train.txt").write_text("hello world\n")
    w["tinyds"] = str(tiny)
    empty = root / "emptyds" / "data"
    empty.mkdir(parents=True)
    (empty / "train.csv").write_text("text\nsome words to read\n")
    (empty / "test.csv").write_text("text\n")
    w["emptyds"] = str(root / "emptyds")
    for name, text in RECIPES.items():
        (root / f"r-{name}.yaml").write_text(text.replace("{tinyds}", w["tinyds"]).replace("{emptyds}", w["emptyds"]))
        w[f"recipe:{name}"] = str(root / f"r-{name}.yaml")
    for name, raw in RAW_RECIPES.items():
        (root / f"r-{name}.yaml").write_bytes(raw)
        w[f"recipe:{name}"] = str(root / f"r-{name}.yaml")
    w.update(_broken_models(root, Path(w["llama"]), pickle_dir))
    (root / "afile.empty").write_text("\n")
    (root / "bad-token-file").write_text("not-a-valid-token\n")
    w["bad-token-file"] = str(root / "bad-token-file")
    w["root"] = str(root)
    return w


def _broken_models(root: Path, llama: Path, pickle_dir: Path) -> dict[str, str]:
    """Copies of the tiny llama with one file damaged each (and folders push must refuse)."""
    import shutil
    import struct

    out: dict[str, str] = {}

    def variant(name: str, damage) -> None:
        folder = root / "broken" / name
        shutil.copytree(llama, folder)
        damage(folder)
        out[name] = str(folder)

    def st(folder: Path) -> Path:
        return folder / "model.safetensors"

    def header(folder: Path, n: int, rest: bytes) -> None:
        st(folder).write_bytes(struct.pack("<Q", n) + rest)

    def symlink(folder: Path) -> None:
        (root / "broken" / "notes.txt").write_text("not a model, just notes\n" * 40)
        st(folder).unlink()
        os.symlink(root / "broken" / "notes.txt", st(folder))

    def wrong_size(folder: Path) -> None:
        head = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
        header(folder, len(head), head + bytes(8))

    def missing_shard(folder: Path) -> None:
        st(folder).rename(folder / "model-00001-of-00002.safetensors")
        index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors",
                                                "model.norm.weight": "model-00001-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    def config(edit) -> Callable[[Path], None]:
        def damage(folder: Path) -> None:
            (folder / "config.json").write_bytes(edit((folder / "config.json").read_bytes()))
        return damage

    def shapes(raw: bytes) -> bytes:
        cfg = json.loads(raw)
        cfg.update(hidden_size=32, intermediate_size=64)
        return json.dumps(cfg).encode()

    variant("st-truncated", lambda f: st(f).write_bytes(st(f).read_bytes()[:5000]))
    variant("st-garbage", lambda f: st(f).write_bytes(hashlib.sha256(b"x").digest() * 100))
    variant("st-empty", lambda f: st(f).write_bytes(b""))
    variant("st-huge-header", lambda f: header(f, 2 ** 40, b"{}"))
    variant("st-short-header", lambda f: header(f, 1000, b"{" + b" " * 90))
    variant("st-bad-json", lambda f: header(f, 16, b"not json at all!" + bytes(64)))
    variant("st-wrong-size", wrong_size)
    variant("st-symlink", symlink)
    variant("st-missing-shard", missing_shard)
    variant("cfg-shapes", config(shapes))
    variant("cfg-latin1", config(lambda raw: raw.replace(b'"llama"', '"llamà"'.encode("latin-1"))))
    variant("cfg-deep", config(lambda raw: b'{"a": ' * 5000 + b"1" + b"}" * 5000))
    variant("cfg-dup", config(lambda raw: raw.replace(b"{", b'{"hidden_size": 8, ', 1)))
    variant("tok-json", lambda f: (f / "tokenizer.json").write_text('{"version": "1.0", "trunc'))
    variant("tok-config", lambda f: (f / "tokenizer_config.json").write_text("{oops"))
    variant("with-pickle", lambda f: shutil.copy(pickle_dir / "pytorch_model.bin", f / "pytorch_model.bin"))

    def nested(folder: Path) -> None:
        (folder / "extra").mkdir()
        (folder / "extra" / "optimizer.pt").write_bytes(b"pickle")
        (folder / "extra" / "state.pkl").write_bytes(b"pickle")
        (folder / ".cache").mkdir()
        (folder / ".cache" / "ignored.bin").write_bytes(b"not uploaded: hidden")

    variant("nested-pickle", nested)
    bad_report = root / "broken" / "bad-report"
    shutil.copytree(llama, bad_report)
    (bad_report / "hfcompress.json").write_text("[" * 5000 + "]" * 5000)
    out["bad-report"] = str(bad_report)
    return out


@pytest.fixture(scope="module")
def hub_repos(request, world) -> dict[str, str]:
    """A private and a public tiny model repo on the session Hub server (created on first use)."""
    hub = request.getfixturevalue("hub_server")
    api = hub.api()
    uid = uuid.uuid4().hex[:8]
    repos = {"private": f"{hub.user}/catalogue-private-{uid}", "public": f"{hub.user}/catalogue-public-{uid}"}
    for kind, repo in repos.items():
        api.create_repo(repo, private=kind == "private")
        api.upload_folder(folder_path=world["llama"], repo_id=repo)
    for kind, folder in (("pickle", world["pickle"]), ("badtok", world["tok-json"]),
                         ("truncated", world["st-truncated"])):
        repo = repos[f"{kind}-repo"] = f"{hub.user}/catalogue-{kind}-{uid}"
        api.create_repo(repo)
        api.upload_folder(folder_path=folder, repo_id=repo)
    return repos


@contextlib.contextmanager
def _offline(home: Path):
    from huggingface_hub import constants

    old_env, old_offline = dict(os.environ), constants.HF_HUB_OFFLINE
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(home)})
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old_offline
        os.environ.clear()
        os.environ.update(old_env)


def _fill(argv: list[str], subs: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capsys.readouterr().err


def _skip_unless_registered(needs):
    if needs and needs[1] not in methods(needs[0]):
        pytest.skip(f"{needs[0]} method {needs[1]} not registered")


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: Case, world, request, tmp_path: Path, capsys):
    _skip_unless_registered(case.needs)
    out = tmp_path / "out"
    subs = {**world, "out": str(out), "tmp": str(tmp_path)}
    ctx = None
    if case.hub:
        hub = request.getfixturevalue("hub_server")
        subs.update(request.getfixturevalue("hub_repos"))
        home = tmp_path / "hf-home"
        home.mkdir()
        ctx = hub_environment(hub.url, hub.token if case.token else None, home)
        ctx.__enter__()
    elif case.offline:
        ctx = _offline(tmp_path / "hf-home")
        ctx.__enter__()
    try:
        argv = _fill(case.argv, subs)
        watched = [Path(world["models"]), Path(world["existing"]), Path(world["root"]) / "afile"]
        before = {str(p): _digest(p) if p.is_dir() else p.read_bytes() for p in watched}
        root_listing = _listing(Path(world["root"]))
        code, err = _run(argv, capsys)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code == case.code, err
        assert len(lines) == 1, err
        for fragment in case.fragments:
            assert fragment in lines[0], lines[0]
        assert "Traceback" not in err
        # nothing written: no output, no temp siblings, inputs untouched
        assert not out.exists() and not Path(str(out) + ".json").exists()
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]
        assert _listing(Path(world["root"])) == root_listing
        assert {str(p): _digest(p) if p.is_dir() else p.read_bytes() for p in watched} == before
        # --debug: the same error line, with the traceback
        code2, err2 = _run(["--debug", *argv], capsys)
        assert code2 == case.code and lines[0] in err2.splitlines(), err2
        if not case.argparse:
            assert "Traceback (most recent call last)" in err2
        assert not out.exists()
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------

def _recipe(text: str):
    from hfcompress.recipes import parse_recipe

    return parse_recipe(text)


def _api_cases(world: dict[str, str], out: Path):
    import hfcompress

    def load_missing():
        hfcompress.load(world["root"] + "/nope")

    def load_not_model():
        hfcompress.load(world["notmodel"])

    def load_pickle():
        hfcompress.load(world["pickle"])

    def config(cls_name, family, **kw):
        def make():
            cls = methods(family)[cls_name].config_cls
            cls(**kw)
        return make

    def prune_every_head():
        from hfcompress.prune import MagnitudeConfig, prune
        prune(hfcompress.load(world["llama"]), MagnitudeConfig(structured="heads", sparsity=0.9))

    def compress_into_input():
        hfcompress.compress(world["llama"], _recipe(R_ZERO), output=world["llama"])

    def compress_existing():
        hfcompress.compress(world["llama"], _recipe(R_ZERO), output=world["existing"])

    def compress_not_recipe():
        hfcompress.compress(world["llama"], {"stages": []}, output=out)

    def unknown_method():
        from hfcompress.registry import get_method
        get_method("quantize", "quanto-int3")

    def recipe_unknown_key():
        _recipe("stages:\n  - prune: {method: magnitude, sparsty: 0.5}\n")

    def push_no_weights():
        from hfcompress.hub import push
        push(world["noweights"], "hfc-tester/never", token="x", endpoint="http://127.0.0.1:9")

    def push_bad_id():
        from hfcompress.hub import push
        push(world["llama"], "no-namespace", token="x", endpoint="http://127.0.0.1:9")

    def calibration_too_short():
        from hfcompress.config import CalibrationConfig
        from hfcompress.data import calibration_ids
        from hfcompress.testing.models import tiny_tokenizer
        calibration_ids(tiny_tokenizer(), CalibrationConfig(dataset=world["tinyds"], seq_len=64, samples=2))

    def empty_split():
        from hfcompress.data import load_texts
        load_texts(world["emptyds"], split="test")

    def missing_column():
        from hfcompress.data import load_texts
        load_texts(world["emptyds"], split="train", column="body")

    def load_broken(key):
        def run():
            hfcompress.load(world[key])
        return run

    def recipe_laughs():
        _recipe(RECIPES["billion-laughs"])

    def recipe_duplicate():
        _recipe(RECIPES["duplicate-key"])

    def recipe_not_utf8():
        from hfcompress.recipes import load_recipe
        load_recipe(world["recipe:latin1"])

    def push_pickle():
        from hfcompress.hub import push
        push(world["with-pickle"], "hfc-tester/never", token="x", endpoint="http://127.0.0.1:9")

    def damaged_report():
        from hfcompress.io import read_report
        read_report(world["bad-report"])

    def pull_below_file():
        from hfcompress.hub import pull
        pull("hfc-tester/never", output=world["root"] + "/afile/out", token="x", endpoint="http://127.0.0.1:9")

    def token_file_missing():
        from hfcompress.hub.transfer import read_token_file
        read_token_file(world["root"] + "/no-token")

    return [
        ("recipe-billion-laughs", recipe_laughs, errors.RecipeError, ("anchors and aliases",), None),
        ("recipe-duplicate-key", recipe_duplicate, errors.RecipeError, ("recipe:5:", "duplicate key 'sparsity'"),
         None),
        ("recipe-not-utf8", recipe_not_utf8, errors.RecipeError, ("not UTF-8 text",), None),
        ("load-truncated-safetensors", load_broken("st-truncated"), errors.ModelLoadError,
         ("model.safetensors is not a valid safetensors file", "truncated"), None),
        ("load-safetensors-symlink", load_broken("st-symlink"), errors.ModelLoadError, ("a link to",), None),
        ("load-config-shapes", load_broken("cfg-shapes"), errors.ModelLoadError, ("does not match its weights",),
         None),
        ("load-config-deep", load_broken("cfg-deep"), errors.ModelLoadError, ("nested more than",), None),
        ("load-broken-tokenizer", load_broken("tok-json"), errors.ModelLoadError,
         ("tokenizer.json: not valid JSON",), None),
        ("push-pickle", push_pickle, errors.UsageError, ("pytorch_model.bin", "allow_pickle=True"), None),
        ("read-damaged-report", damaged_report, errors.UsageError, ("hfcompress.json: nested more than",), None),
        ("pull-output-below-a-file", pull_below_file, errors.OutputError, ("is a file, not a folder",), None),
        ("token-file-missing", token_file_missing, errors.UsageError, ("--token-file", "cannot be read"), None),
        ("load-missing-folder", load_missing, errors.ModelLoadError, ("does not exist",), None),
        ("load-not-a-model", load_not_model, errors.ModelLoadError, ("no config.json",), None),
        ("load-pickle-without-opt-in", load_pickle, errors.ModelLoadError, ("allow_pickle=True",), None),
        ("config-sparsity-1.5", config("magnitude", "prune", sparsity=1.5), ValueError, ("less than 1",),
         ("prune", "magnitude")),
        ("config-nm-4-2", config("magnitude", "prune", pattern="4:2"), ValueError,
         ("N must be smaller than M",), ("prune", "magnitude")),
        ("config-nm-unsupported-method", config("threshold", "prune", pattern="2:4"), ValueError,
         ("does not support N:M",), ("prune", "threshold")),
        ("config-group-size-4", config("quanto-int4", "quantize", group_size=4), ValueError,
         ("greater than or equal to 8",), ("quantize", "quanto-int4")),
        ("prune-every-head", prune_every_head, errors.UsageError, ("would remove every one",),
         ("prune", "magnitude")),
        ("compress-into-input", compress_into_input, errors.OutputError, ("is the input model folder",),
         ("prune", "magnitude")),
        ("compress-existing-output", compress_existing, errors.OutputError, ("pass --overwrite",),
         ("prune", "magnitude")),
        ("compress-needs-recipe", compress_not_recipe, errors.UsageError, ("needs a Recipe",), None),
        ("unknown-method", unknown_method, errors.NotImplementedStageError, ("available:",), None),
        ("recipe-unknown-key", recipe_unknown_key, errors.RecipeError, ("unknown key 'sparsty'",),
         ("prune", "magnitude")),
        ("push-no-weights", push_no_weights, errors.UsageError, ("no weights",), None),
        ("push-bad-repo-id", push_bad_id, errors.UsageError, ("namespace/name",), None),
        ("calibration-too-short", calibration_too_short, errors.UsageError, ("fewer than seq_len=64",), None),
        ("evaluation-split-empty", empty_split, errors.UsageError, ("is empty",), None),
        ("dataset-column-missing", missing_column, errors.UsageError, ("has no column 'body'",), None),
    ]


API_IDS = [c[0] for c in _api_cases({}, Path("."))]


@pytest.mark.parametrize("case_id", API_IDS)
def test_api_bad_input(case_id: str, world, tmp_path: Path):
    out = tmp_path / "out"
    case = {c[0]: c for c in _api_cases(world, out)}[case_id]
    _, fn, exc_type, fragments, needs = case
    _skip_unless_registered(needs)
    before = _digest(Path(world["models"]))
    with pytest.raises(exc_type) as info:
        fn()
    if isinstance(info.value, errors.HFCompressError):
        assert "\n" not in str(info.value)
        text = str(info.value)
    else:  # pydantic ValidationError: the first error's message is the line a user reads
        text = info.value.errors()[0]["msg"]
    for fragment in fragments:
        assert fragment in text, text
    assert not out.exists()
    assert _digest(Path(world["models"])) == before


def test_pickle_loads_with_explicit_opt_in(world):
    import hfcompress

    bundle = hfcompress.load(world["pickle"], allow_pickle=True, with_tokenizer=False)
    assert type(bundle.model).__name__ == "LlamaForCausalLM"


# ---------------------------------------------------------------------------------------------
# Disk full
# ---------------------------------------------------------------------------------------------

def test_disk_full_in_process(world, tmp_path: Path, monkeypatch, capsys):
    """A write that fails with ENOSPC: one line, exit 1, no output and no temp sibling left."""
    import transformers.modeling_utils as mu

    _skip_unless_registered(("prune", "magnitude"))
    real = mu.safe_save_file

    def full(*args, **kwargs):
        real(*args, **kwargs)  # half the folder exists when the disk "fills up"
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mu, "safe_save_file", full)
    out = tmp_path / "out"
    code, err = _run(["compress", world["llama"], "-r", world["recipe:magnitude"], "-o", str(out)], capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "no space left" in lines[0], err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "no half folder, no temp sibling"


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    """A 256 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        res = None
    if res is None or res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?): the in-process ENOSPC test covers disk-full")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


def test_disk_full_real_tmpfs(world, tiny_disk: Path, capsys):
    """A real full disk (the tiny model's weights are 420 KB, the disk 256 KiB)."""
    _skip_unless_registered(("prune", "magnitude"))
    out = tiny_disk / "out"
    code, err = _run(["compress", world["llama"], "-r", world["recipe:magnitude"], "-o", str(out)], capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "no space left" in lines[0], err
    assert "Traceback" not in err
    assert os.listdir(tiny_disk) == [], "the full disk holds no half folder"
