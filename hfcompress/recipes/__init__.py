"""YAML recipes: an ordered list of stage configs (the same objects the Python API takes)."""

from .recipe import Recipe, dump_recipe, load_recipe, parse_recipe

__all__ = ["Recipe", "dump_recipe", "load_recipe", "parse_recipe"]
