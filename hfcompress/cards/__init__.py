"""Model cards generated from an output folder's ``hfcompress.json``.

Rendered from the Jinja template in ``model_cards/`` through ``huggingface_hub.ModelCard``
/ ``ModelCardData`` (metadata: base_model, base_model_relation, license, tags, datasets,
model-index results)::

    from hfcompress.cards import write_card
    write_card("out/smollm2-wanda-nf4", repo_id="me/smollm2-wanda-nf4")   # writes README.md

A folder compressed from a local model (no Hub repo id) gets no ``base_model``: the
card says so instead of inventing one. No token, user name or local path is written.
"""

from .card import build_card, is_generated_card, write_card

__all__ = ["build_card", "is_generated_card", "write_card"]
