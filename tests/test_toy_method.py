"""Adding a method = one file + one decorator: it appears in the CLI, in recipes and in the docs table."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from hfcompress.cli import build_parser
from hfcompress.cli.methods_table import methods_table
from hfcompress.recipes import parse_recipe
from hfcompress.registry import _REGISTRY

TOY = textwrap.dedent('''
    from typing import Literal

    from pydantic import Field

    from hfcompress.prune.base import PruneConfig
    from hfcompress.registry import register
    from hfcompress.stage import StageContext


    class ToyConfig(PruneConfig):
        """Toy pruning: zero nothing, say how much it would have."""

        method: Literal["toy-prune"] = "toy-prune"
        toy_strength: float = Field(0.25, description="how hard the toy pretends to prune")


    @register(ToyConfig)
    def apply_toy(bundle, config: ToyConfig, ctx: StageContext) -> dict:
        return {"would_prune": config.toy_strength}
''')


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    (tmp_path / "toy_method_plugin.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_method_plugin")
    yield module
    _REGISTRY["prune"].pop("toy-prune", None)
    sys.modules.pop("toy_method_plugin", None)


def test_toy_method_everywhere(toy_module, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "--help"])
    help_text = capsys.readouterr().out
    assert "toy-prune" in help_text
    assert "--toy-strength" in help_text and "how hard the toy pretends to prune" in help_text
    assert "(default: 0.25)" in help_text
    args = build_parser().parse_args(["prune", "m", "--method", "toy-prune", "--sparsity", "0.3",
                                      "--toy-strength", "0.5", "-o", "o"])
    from hfcompress.cli.common import method_config

    cfg = method_config(args)
    assert type(cfg).__name__ == "ToyConfig" and cfg.toy_strength == 0.5 and cfg.sparsity == 0.3
    recipe = parse_recipe("stages:\n  - prune: {method: toy-prune, toy_strength: 0.75}\n")
    assert recipe.stages[0].toy_strength == 0.75
    assert "| prune | `toy-prune` |" in methods_table() and "Toy pruning" in methods_table()


def test_duplicate_name_raises(toy_module):
    from hfcompress.prune.base import PruneConfig
    from hfcompress.registry import register

    class Other(PruneConfig):
        method: str = "toy-prune"

    with pytest.raises(ValueError, match="already registered"):
        register(Other)(lambda b, c, x: {})


def test_docs_table_is_current():
    import subprocess
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
    # A fresh process: only the shipped methods (tests register their own in this one).
    proc = subprocess.run([sys.executable, "-m", "hfcompress.cli.methods_table", "--check", str(doc)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_field_shadowing_a_shared_flag_is_named():
    """A method field that would take a shared flag's name (here --seed) is a clear error, not an
    argparse conflict deep in the parser."""
    from typing import Literal

    from hfcompress.prune.base import PruneConfig
    from hfcompress.registry import register

    class Shadow(PruneConfig):
        """Shadows --seed."""

        method: Literal["toy-shadow"] = "toy-shadow"
        seed: int = 0

    register(Shadow)(lambda b, c, x: {})
    try:
        with pytest.raises(ValueError, match="'seed'.*would shadow the CLI flag --seed"):
            build_parser()
    finally:
        _REGISTRY["prune"].pop("toy-shadow", None)
