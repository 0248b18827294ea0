"""Model / dataset card metadata: README front matter parsing and ``validate-yaml`` checks."""

from __future__ import annotations

import json
import re


def parse_front_matter(text: str) -> tuple[dict | None, str | None]:
    """``(metadata, error)`` from a README's YAML front matter (``({}, None)`` when absent)."""
    import yaml

    if not text.startswith("---"):
        return {}, None
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if m is None:
        m = re.match(r"^---[ \t]*\r?\n()---[ \t]*(\r?\n|$)", text)
        if m is None:
            return None, "YAML front matter is not closed by a '---' line"
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as exc:
        return None, f"invalid YAML in front matter: {' '.join(str(exc).split())}"
    except RecursionError:
        return None, "invalid YAML in front matter: nested too deeply"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return None, f"YAML front matter must be a mapping, got {type(data).__name__}"
    try:
        return json.loads(json.dumps(data, default=str)), None
    except (ValueError, RecursionError):  # e.g. a recursive alias (&a [*a])
        return None, "YAML front matter cannot be represented as JSON (recursive aliases?)"


_STR_OR_LIST = ("license", "language", "base_model", "datasets", "metrics", "tags", "license_name")


def validate_card_metadata(meta: dict, repo_type: str) -> list[str]:
    """Errors in card metadata (types of the well-known keys; dataset ``configs``)."""
    errors = []
    for key in _STR_OR_LIST:
        val = meta.get(key)
        if val is not None and not (isinstance(val, str) or
                                    (isinstance(val, list) and all(isinstance(v, str) for v in val))):
            errors.append(f'"{key}" must be a string or a list of strings')
    for key in ("pipeline_tag", "library_name", "license_link", "pretty_name"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    if "model-index" in meta and not isinstance(meta["model-index"], list):
        errors.append('"model-index" must be a list')
    configs = meta.get("configs")
    if configs is not None:
        if repo_type != "dataset":
            errors.append('"configs" is only allowed in dataset cards')
        elif not isinstance(configs, list):
            errors.append('"configs" must be a list')
        else:
            for i, cfg in enumerate(configs):
                if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
                    errors.append(f'"configs[{i}]" must be a mapping with a string "config_name"')
    return errors

