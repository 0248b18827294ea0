"""Per-architecture block layouts as data, and the generic discovery that proposes them.

::

    from hfcompress.layouts import layout_for, propose_layout
    layout, source = layout_for(model.model.layers[0], model.config, "decoder")
    layout.ffn.inputs, layout.ffn.output     # ('mlp.gate_proj', 'mlp.up_proj'), 'mlp.down_proj'

See docs/ARCHITECTURES.md for how to declare a layout for a new architecture.
"""

from .declared import DECLARED, declared_layout
from .discover import layout_for, projection_shape, projections, propose_layout
from .spec import FFN, Attention, BlockLayout, Fields

__all__ = ["DECLARED", "FFN", "Attention", "BlockLayout", "Fields", "declared_layout", "layout_for",
           "projection_shape", "projections", "propose_layout"]
