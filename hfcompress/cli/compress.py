"""CLI: ``compress MODEL --recipe FILE --output DIR``."""

from __future__ import annotations

from ..recipes import load_recipe
from .common import add_model_args, add_output_args, run_recipe


def _run(args) -> int:
    recipe = load_recipe(args.recipe)  # validated before any model work
    return run_recipe(args, recipe)


def register(sub) -> None:
    p = sub.add_parser("compress", help="run a YAML recipe (prune / quantize / distill / evaluate stages)",
                       description="Run a recipe on a model and write a Hugging Face model folder with "
                       "recipe.yaml and hfcompress.json.")
    add_model_args(p)
    p.add_argument("--recipe", "-r", required=True, help="YAML recipe file")
    add_output_args(p)
    p.set_defaults(func=_run)
