"""OLMo 2 (and OLMo 1): the base family as it is.

OLMo 2's differences from Llama all live inside the decoder layer and its attention — no pre-norms, an
RMSNorm after attention and after the MLP (`post_attention_layernorm`, `post_feedforward_layernorm`),
RMSNorm on the full q and k projections — so the base call `block(h, mask, position_ids,
position_embeddings)` runs it exactly, and `model.{embed_tokens, layers, norm, rotary_emb}` / `lm_head` are
where the base looks. OLMo 1 (`olmo`) likewise: its non-parametric LayerNorms and `clip_qkv` are inside the
layer and the final `norm`.
"""

from dihal.backbone.families.base import Family

FAMILY = Family
