"""Which token starts a block, and which ids are special.

A block's first token sets the context every later state is computed in. It must be
the token the backbone saw between documents during pretraining: an instruct model's
`bos_token` is often a chat marker (`<|im_start|>` for SmolLM2-Instruct), a context
it never saw followed by raw text, and in that context a word fragment at position 1
can become a second attention sink with a norm hundreds of times the median — one
such state decided ℓ* on the quickstart before this rule existed.

`auto` resolves, from the tokenizer alone:
1. `<|endoftext|>` when the vocabulary has it as a special token — the pretraining
   document separator of SmolLM/SmolLM2, GPT-2, Pythia, Qwen2/Qwen3 (which have no BOS
   at all), Phi and OLMo;
2. else the BOS token, unless it is a chat marker (Llama-3 `<|begin_of_text|>`,
   Llama-2/Mistral `<s>`, Gemma `<bos>`);
3. else the EOS token, unless it is a chat marker;
4. else an error asking for `data.block_start` by name.

A token is a chat marker when its text appears literally in the tokenizer's chat
template. `bos`, `eos` or a literal token string choose explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

DOCUMENT_SEPARATOR = "<|endoftext|>"


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class BlockStart:
    id: int
    text: str
    rule: str  # the spec value that chose it
    why: str  # how `auto` resolved, for the run's record


def special_ids(tokenizer) -> frozenset[int]:
    """Every id the tokenizer treats as special: BOS/EOS/pad/unk, chat markers and other added specials."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None}
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return frozenset(ids)


def _chat_template_text(tokenizer) -> str:
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):
        return "\n".join(str(v) for v in tpl.values())
    return tpl or ""


def is_chat_marker(tokenizer, text: str | None) -> bool:
    return bool(text) and text in _chat_template_text(tokenizer)


def _token_id(tokenizer, text: str) -> int | None:
    """The id of `text` as one vocabulary entry, or None when it is not one."""
    vocab = tokenizer.get_vocab()
    return int(vocab[text]) if text in vocab else None


def resolve_block_start(tokenizer, rule: str = "auto") -> BlockStart:
    if rule == "auto":
        sep = _token_id(tokenizer, DOCUMENT_SEPARATOR)
        if sep is not None and sep in special_ids(tokenizer):
            return BlockStart(sep, DOCUMENT_SEPARATOR, rule, "the vocabulary's document separator")
        for role in ("bos", "eos"):
            text, tid = getattr(tokenizer, f"{role}_token", None), getattr(tokenizer, f"{role}_token_id", None)
            if tid is not None and not is_chat_marker(tokenizer, text):
                return BlockStart(int(tid), str(text), rule, f"the tokenizer's {role.upper()} token")
        raise TokenError(
            f"data.block_start: 'auto' found no document separator: the tokenizer has no {DOCUMENT_SEPARATOR} and its "
            f"BOS ({getattr(tokenizer, 'bos_token', None)!r}) and EOS ({getattr(tokenizer, 'eos_token', None)!r}) are "
            "missing or chat-template markers; name the token the model was pretrained with between documents"
        )
    if rule in ("bos", "eos"):
        text, tid = getattr(tokenizer, f"{rule}_token", None), getattr(tokenizer, f"{rule}_token_id", None)
        if tid is None:
            raise TokenError(
                f"data.block_start: {rule!r} but the tokenizer has no {rule.upper()} token; use 'auto' or name a token"
            )
        return BlockStart(int(tid), str(text), rule, f"the tokenizer's {rule.upper()} token (chosen explicitly)")
    tid = _token_id(tokenizer, rule)
    if tid is None:
        raise TokenError(
            f"data.block_start: {rule!r} is not one token of this tokenizer's vocabulary; "
            "expected 'auto', 'bos', 'eos' or a token such as '<|endoftext|>'"
        )
    return BlockStart(tid, rule, rule, "named in the spec")
