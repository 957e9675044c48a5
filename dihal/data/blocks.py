"""Fixed-length token blocks: one document each, spread over as many documents as possible.

Every block is `[start] + seq_len-1 consecutive tokens of ONE document`: no block
straddles two documents and no separator sits inside one, so every state after
position 0 is text the backbone reads as text. Special tokens never appear after
position 0: documents are tokenized with `split_special_tokens=True` (a literal
"<|im_end|>" in a document is text, not a marker), and any special id that still
comes out is removed and counted.

Why spread: the geometry proxies are statistics of a token cloud, and tokens of one
document are strongly correlated. A sample read front to back from a few long
documents lets one document (one genealogy, one repeated formula) dominate the
cloud. Blocks are therefore drawn round-robin: one window from each document (in a
seeded order) before a second from any, and never more than `max_per_doc` from one.
Within a document the windows are non-overlapping and taken in random order.

Why sentence-aligned (`align="sentence"`, the default): in pretraining the token
after the document separator is a document's first token. A window cut at an
arbitrary offset puts a word fragment or a full stop there instead, and on SmolLM2
a "." or ";" right after `<|endoftext|>` becomes a second attention sink from block
12 up (norm ~170x the median, measured). Windows therefore start at the document's
start or right after a token that ends a sentence (".", "!", "?", ";", ":" or a
newline). `align="any"` cuts at a random phase instead.

The block order is the round order, so contiguous slices of the blocks (the
validation batches) hold distinct documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dihal.data.tokens import special_ids

_CHUNK = 256  # documents tokenized per call: batched calls are much faster than one by one


class BlockError(RuntimeError):
    pass


@dataclass
class Blocks:
    ids: np.ndarray  # (n, T) int64, column 0 the start token
    doc: np.ndarray  # (n,) int64: index of each block's document in `doc_ids`
    doc_ids: list[str]  # the documents blocks came from, in first-use order
    stats: dict = field(default_factory=dict)

    @property
    def n_documents(self) -> int:
        return len(self.doc_ids)


ALIGNS = ("sentence", "any")
_SENTENCE_END = (".", "!", "?", ";", ":", "\n")


def sentence_end_ids(tokenizer) -> frozenset[int]:
    """Ids whose text ends a sentence, decided once over the vocabulary."""
    ids = []
    for tid in range(len(tokenizer)):
        text = tokenizer.decode([tid])
        if text.rstrip(" ").endswith(_SENTENCE_END):
            ids.append(tid)
    return frozenset(ids)


def _windows(tokens: list[int], piece: int, rng: np.random.Generator, ends: frozenset[int] | None) -> list[int]:
    """Start offsets of non-overlapping `piece`-token windows of a document, in random order.

    With `ends`, a window starts at 0 or right after a sentence-ending token (greedy from
    the start); without, windows tile the document from a random phase.
    """
    n_tokens = len(tokens)
    if n_tokens < piece:
        return []
    if ends is None:
        n = n_tokens // piece
        phase = int(rng.integers(0, n_tokens - n * piece + 1))
        starts = [phase + i * piece for i in range(n)]
    else:
        starts, free = [], 0
        candidates = [0] + [i + 1 for i, t in enumerate(tokens[:-1]) if t in ends]
        for c in candidates:
            if c >= free and c + piece <= n_tokens:
                starts.append(c)
                free = c + piece
    return [starts[i] for i in rng.permutation(len(starts))]


def sample_blocks(
    docs,
    tokenizer,
    *,
    start_id: int,
    seq_len: int,
    n_blocks: int,
    seed: int,
    max_per_doc: int,
    align: str = "sentence",
    split: str = "",
) -> Blocks:
    """`n_blocks` blocks of `seq_len` ids drawn round-robin over the documents (see module doc).

    Only as many documents are tokenized as needed for one block each (all of them when
    the split has fewer), so a large corpus costs what the sample needs.
    """
    if seq_len < 2:
        raise BlockError(f"seq_len must be >= 2, got {seq_len}")
    if align not in ALIGNS:
        raise BlockError(f"align must be one of {ALIGNS}, got {align!r}")
    ends = sentence_end_ids(tokenizer) if align == "sentence" else None
    piece = seq_len - 1
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    specials = special_ids(tokenizer) | {int(start_id)}
    tokens: list[list[int]] = []  # per usable document
    used: list[int] = []  # index into docs
    plans: list[list[int]] = []
    short = removed = tiled = 0  # tiled: the blocks block_align: any would cut from the same documents
    for lo in range(0, len(order), _CHUNK):
        chunk = [int(i) for i in order[lo : lo + _CHUNK]]
        enc = tokenizer([docs[i].text for i in chunk], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        for i, ids in zip(chunk, enc):
            clean = [t for t in ids if t not in specials]
            removed += len(ids) - len(clean)
            starts = _windows(clean, piece, rng, ends)
            tiled += min(len(clean) // piece, max_per_doc)
            if not starts:
                short += 1
                continue
            used.append(i)
            tokens.append(clean)
            plans.append(starts[:max_per_doc])
        if len(used) >= n_blocks:
            break
    available = sum(len(p) for p in plans)
    if available < n_blocks:
        fix = (
            f"blocks may start only at a sentence start, and these documents have few; data.block_align: any "
            f"would cut {tiled} blocks from them"
            if ends is not None and tiled >= n_blocks
            else "lower the size, raise data.max_blocks_per_document or add data"
        )
        raise BlockError(
            f"the {split or 'selected'} split yields {available} blocks of {seq_len} tokens "
            f"(at most {max_per_doc} per document from {len(used)} documents long enough; {short} without a "
            f"{piece}-token window), fewer than the {n_blocks} needed; {fix}"
        )
    rows, owner = [], []
    for r in range(max_per_doc):
        for k, starts in enumerate(plans):
            if r < len(starts) and len(rows) < n_blocks:
                s = starts[r]
                rows.append([int(start_id), *tokens[k][s : s + piece]])
                owner.append(k)
        if len(rows) == n_blocks:
            break
    ids = np.asarray(rows, dtype=np.int64)
    # Renumber documents by first use so `doc` indexes a list of only the documents in the sample.
    first_use = list(dict.fromkeys(owner))
    remap = {k: j for j, k in enumerate(first_use)}
    doc = np.asarray([remap[k] for k in owner], dtype=np.int64)
    counts = np.bincount(doc)
    stats = {
        "n_blocks": int(n_blocks),
        "n_documents": len(first_use),
        "max_blocks_per_document": int(counts.max()),
        "documents_tokenized": len(used) + short,
        "documents_too_short": short,
        "special_tokens_removed": removed,
        "start_id": int(start_id),
        "align": align,
    }
    return Blocks(ids=ids, doc=doc, doc_ids=[docs[used[k]].id for k in first_use], stats=stats)


def content_mask(ids: np.ndarray, specials, skip: int = 1) -> np.ndarray:
    """True where a state may enter geometry, a loss or a statistic: not in the first `skip`
    positions (the start token / clamped prefix) and not a special token."""
    mask = ~np.isin(ids, np.fromiter(specials, dtype=np.int64, count=len(specials)))
    mask[:, :skip] = False
    return mask
