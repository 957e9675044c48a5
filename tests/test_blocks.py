"""Blocks: one document each, spread over documents, sentence-aligned, and no special token after position 0."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dihal.data.blocks import BlockError, content_mask, sample_blocks, sentence_end_ids
from dihal.data.corpora import Document
from dihal.data.tokens import TokenError, resolve_block_start, special_ids

WORDS = "and the earth was without form void darkness upon face of deep God said let there be light".split()


def make_tokenizer(specials: list[str], bos: str | None, eos: str | None, chat_template: str | None = None):
    """A small byte-level BPE tokenizer with the given special tokens (no hub access)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", *specials], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([" ".join(WORDS) + ". And so on; yes: no!"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token="<unk>")
    fast.chat_template = chat_template
    return fast


SMOL = dict(
    specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    bos="<|im_start|>",
    eos="<|im_end|>",
    chat_template="{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
)
LLAMA = dict(specials=["<s>", "</s>"], bos="<s>", eos="</s>")
QWEN = dict(
    specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    bos=None,
    eos="<|im_end|>",
    chat_template=SMOL["chat_template"],
)
CHAT_ONLY = dict(
    specials=["<|im_start|>", "<|im_end|>"], bos="<|im_start|>", eos="<|im_end|>", chat_template=SMOL["chat_template"]
)


def docs(n: int, words: int = 60, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sentences = [" ".join(rng.choice(WORDS, size=rng.integers(4, 9))) for _ in range(words // 6)]
        out.append(Document(f"d{i}", ". ".join(sentences) + "."))
    return out


@pytest.mark.parametrize("kind, expected", [(SMOL, "<|endoftext|>"), (LLAMA, "<s>"), (QWEN, "<|endoftext|>")])
def test_auto_block_start_is_the_pretraining_separator_never_a_chat_marker(kind, expected):
    start = resolve_block_start(make_tokenizer(**kind), "auto")
    assert start.text == expected


def test_block_start_errors_and_explicit_choices():
    with pytest.raises(TokenError, match="no document separator"):
        resolve_block_start(make_tokenizer(**CHAT_ONLY), "auto")
    smol = make_tokenizer(**SMOL)
    assert resolve_block_start(smol, "bos").text == "<|im_start|>"  # explicit: allowed, the user asked
    assert resolve_block_start(smol, "<|im_end|>").id == smol.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(TokenError, match="not one token"):
        resolve_block_start(smol, "<|nope|>")
    with pytest.raises(TokenError, match="no BOS"):
        resolve_block_start(make_tokenizer(**QWEN), "bos")


def test_blocks_spread_over_documents_and_never_straddle_one():
    tok = make_tokenizer(**SMOL)
    corpus = docs(40)
    b = sample_blocks(corpus, tok, start_id=0, seq_len=16, n_blocks=30, seed=1, max_per_doc=4)
    assert b.ids.shape == (30, 16) and (b.ids[:, 0] == 0).all()
    assert b.n_documents == 30 and len(set(b.doc.tolist())) == 30  # k blocks from k documents when available
    # every block is a contiguous run of its own document's tokens
    by_id = {d.id: tok(d.text, add_special_tokens=False)["input_ids"] for d in corpus}
    for row, d in zip(b.ids, b.doc):
        toks, piece = by_id[b.doc_ids[d]], row[1:].tolist()
        assert any(toks[i : i + 15] == piece for i in range(len(toks) - 14))
    # more blocks than documents: round-robin, so counts differ by at most one, capped
    b2 = sample_blocks(corpus[:10], tok, start_id=0, seq_len=16, n_blocks=25, seed=1, max_per_doc=3)
    counts = np.bincount(b2.doc)
    assert counts.max() - counts.min() <= 1 and counts.max() <= 3
    # contiguous slices (validation batches) hold distinct documents
    assert all(len(set(b2.doc[i : i + 10].tolist())) == 10 for i in (0, 10))


def test_blocks_start_at_sentences_and_are_seeded():
    tok = make_tokenizer(**SMOL)
    ends = sentence_end_ids(tok)
    corpus = docs(20, words=120)
    by_id = {d.id: tok(d.text, add_special_tokens=False)["input_ids"] for d in corpus}
    b = sample_blocks(corpus, tok, start_id=0, seq_len=12, n_blocks=40, seed=3, max_per_doc=4)
    for row, d in zip(b.ids, b.doc):
        toks, piece = by_id[b.doc_ids[d]], row[1:].tolist()
        starts = [i for i in range(len(toks) - 10) if toks[i : i + 11] == piece]
        assert any(i == 0 or toks[i - 1] in ends for i in starts)
    same = sample_blocks(corpus, tok, start_id=0, seq_len=12, n_blocks=40, seed=3, max_per_doc=4)
    other = sample_blocks(corpus, tok, start_id=0, seq_len=12, n_blocks=40, seed=4, max_per_doc=4)
    assert np.array_equal(b.ids, same.ids) and not np.array_equal(b.ids, other.ids)


def test_too_little_text_is_a_clear_error():
    with pytest.raises(BlockError, match="fewer than the 10 needed"):
        sample_blocks(
            docs(2),
            make_tokenizer(**LLAMA),
            start_id=1,
            seq_len=16,
            n_blocks=10,
            seed=0,
            max_per_doc=2,
            split="geometry",
        )


def test_a_corpus_without_sentences_is_told_to_drop_sentence_alignment():
    """A word list has no sentence ends: under `sentence` alignment each document gives one block, and the
    advice is the alignment (raising max_blocks_per_document would not help)."""
    words = [Document(f"w{i}", " ".join(WORDS * 6)) for i in range(3)]
    kwargs = dict(start_id=1, seq_len=16, n_blocks=9, seed=0, max_per_doc=8, split="train")
    tok = make_tokenizer(**LLAMA)
    with pytest.raises(BlockError, match="data.block_align: any would cut") as info:
        sample_blocks(words, tok, **kwargs)
    assert "max_blocks_per_document" not in str(info.value)
    assert len(sample_blocks(words, tok, align="any", **kwargs).ids) == 9


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from([SMOL, LLAMA, QWEN]),
    seed=st.integers(0, 2**16),
    inserts=st.lists(
        st.sampled_from(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>"]), max_size=6
    ),
    align=st.sampled_from(["sentence", "any"]),
)
def test_no_special_token_enters_a_sample_a_loss_or_a_standardizer_fit(kind, seed, inserts, align):
    """Documents that literally contain special-token strings still yield special-free content."""
    import torch

    from dihal.stages.train import fit_standardizer

    tok = make_tokenizer(**kind)
    corpus = docs(12, words=90, seed=seed)
    for i, s in enumerate(inserts):
        d = corpus[i % len(corpus)]
        corpus[i % len(corpus)] = Document(d.id, d.text.replace(" the ", f" {s} ", 1))
    start = resolve_block_start(tok, "auto")
    specials = special_ids(tok) | {start.id}
    b = sample_blocks(corpus, tok, start_id=start.id, seq_len=12, n_blocks=20, seed=seed, max_per_doc=4, align=align)
    assert not np.isin(b.ids[:, 1:], list(specials)).any()
    for skip in (1, 2):  # geometry (position 0 dropped) and a bridge with a 2-token clamped prefix
        mask = content_mask(b.ids, specials, skip=skip)
        assert not np.isin(b.ids[mask], list(specials)).any() and not mask[:, :skip].any()
    # the Standardizer sees exactly the content positions: a planted huge value at position 0 changes nothing
    h = torch.randn(*b.ids.shape, 8)
    std, report = fit_standardizer(h, b.ids, specials, 1, {"rule": "keep", "threshold": 20.0})
    h[:, 0] = 1e6
    std2, _ = fit_standardizer(h, b.ids, specials, 1, {"rule": "keep", "threshold": 20.0})
    assert torch.equal(std.mean, std2.mean) and report["positions_excluded"] == len(b.ids)
