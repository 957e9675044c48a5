"""Document-level splits and BOS-first blocks, on the embedded corpus, text files and a HF dataset on disk."""

from __future__ import annotations

import numpy as np
import pytest

from dihal.data import DataError, Document, assign_split, load_documents, split_documents, token_blocks
from dihal.spec import DataSpec, SplitFractions
from tests.tiny import make_tokenizer


def test_kjv_is_one_document_per_chapter_and_splits_are_disjoint():
    docs = load_documents(DataSpec())
    assert len(docs) == 1189
    assert docs[0].id.startswith("kjv/") and "beginning" in next(d for d in docs if d.id == "kjv/Genesis/1").text
    splits = split_documents(docs, SplitFractions())
    ids = [{d.id for d in v} for v in splits.values()]
    assert sum(len(s) for s in ids) == len(docs) and not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    assert 0.7 < len(splits["train"]) / len(docs) < 0.9


def test_split_depends_only_on_the_document():
    doc = Document("a", "some text")
    fr = SplitFractions()
    assert assign_split(doc, fr) == assign_split(Document("b", "some text"), fr)
    others = split_documents([Document(str(i), f"doc {i}") for i in range(50)] + [doc], fr)
    assert doc in others[assign_split(doc, fr)]


def test_blocks_start_with_bos_and_are_deterministic():
    tok = make_tokenizer()
    docs = [Document(str(i), f"And God said, let there be light number {i}.") for i in range(40)]
    a = token_blocks(docs, tok, bos_id=1, seq_len=16, n_blocks=5, seed=3)
    b = token_blocks(docs, tok, bos_id=1, seq_len=16, n_blocks=5, seed=3)
    c = token_blocks(docs, tok, bos_id=1, seq_len=16, n_blocks=5, seed=4)
    assert a.shape == (5, 16) and (a[:, 0] == 1).all() and np.array_equal(a, b) and not np.array_equal(a, c)


def test_too_little_text_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than"):
        token_blocks([Document("a", "short")], make_tokenizer(), bos_id=1, seq_len=64, n_blocks=10, seed=0, split="geometry")


def test_text_files_split_into_paragraph_documents(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first paragraph\n\nsecond one\n\n\nthird")
    docs = load_documents(DataSpec(source="text", paths=(str(f),)))
    assert [d.text for d in docs] == ["first paragraph", "second one", "third"]


def test_hf_dataset_from_a_local_directory(tmp_path):
    import datasets

    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": ["alpha beta", "", "gamma delta"]})})
    ds.save_to_disk(tmp_path / "ds")
    docs = load_documents(DataSpec(source="hf", dataset=str(tmp_path / "ds"), text_field="body"))
    assert [d.text for d in docs] == ["alpha beta", "gamma delta"]
    with pytest.raises(DataError, match="text_field"):
        load_documents(DataSpec(source="hf", dataset=str(tmp_path / "ds")))
