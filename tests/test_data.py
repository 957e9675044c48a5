"""Document-level splits, on the embedded corpus, text files and a HF dataset on disk (blocks: test_blocks.py)."""

from __future__ import annotations

import pytest

from dihal.data.corpora import DataError, Document, assign_split, load_documents, split_documents
from dihal.spec.schema import DataSpec, SplitFractions


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
