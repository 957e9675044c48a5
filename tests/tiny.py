"""Tiny, randomly initialised backbones built in code: fast, offline, real transformers models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

CORPUS = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "And God said, Let there be light: and there was light.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
]


# The tiny model's spec (`save_tiny(root / "tiny")`, the project as working directory): seconds per stage.
TINY = {
    "name": "tiny",
    "backbone": {"source": "local", "id": "tiny"},
    "data": {"source": "kjv", "max_documents": 200},
    "geometry": {"seq_len": 16, "n_tokens": 512, "anchors": 64, "k": 8, "pairs": 256, "batch_size": 8},
    "bridge": {
        "seq_len": 16,
        "n_train": 64,
        "n_val": 16,
        "d_model": 32,
        "depth": 1,
        "heads": 2,
        "steps": 30,
        "warmup": 5,
        "batch_size": 8,
        "checkpoint_every": 10,
    },
    "eval": {"n_samples": 4, "sampling_steps": 5, "n_boot": 50, "val_batches": 2},
}
# A 3-layer × 2-seed sweep of it: the executor tests and benchmark.
TINY_SWEEP = {**TINY, "name": "sweep", "bridge": {**TINY["bridge"], "steps": 20, "layers": [1, 2, 3], "seeds": [0, 1]}}


def make_tokenizer(vocab_size: int = 256):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_model(arch: str = "llama", n_layers: int = 4, d: int = 32, vocab: int = 512, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(cfg).eval()
    if arch == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab, n_embd=d, n_layer=n_layers, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2
        )
        return GPT2LMHeadModel(cfg).eval()
    raise ValueError(arch)


def save_tiny(path: Path, arch: str = "llama", n_layers: int = 4) -> Path:
    tok = make_tokenizer()
    model = make_model(arch, n_layers=n_layers, vocab=len(tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@contextmanager
def tiny_project(root: Path) -> Iterator[Path]:
    """`root` with the tiny model saved as root/tiny, the working directory until the block ends (the specs name
    the model relative to the project root)."""
    import pytest

    save_tiny(root / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield root


def write_spec_from(base: dict, root: Path, name: str, **changes) -> Path:
    """`base` with `section__field=value` (or `section=value`) changes, written to root/<name>.yaml."""
    import copy

    import yaml

    spec = copy.deepcopy(base)
    spec["name"] = name
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            spec[section][field] = value
        else:
            spec[section] = value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def ledger_rows(root: Path, sql: str) -> list[tuple]:
    """Rows of a query on the project's ledger, through a read-only connection closed at once."""
    import duckdb

    con = duckdb.connect(str(root / "ledger" / "dihal.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def stages_ran(output: str) -> list[str]:
    """The stages a run computed, in order: from `dihal run`'s `stage i/n kind (…): <stage name>` lines (a stage
    it only checked ends in `up to date`), else from DVC's own `Running stage '<name>'` lines (`dvc repro`, the
    Ray executor)."""
    import re

    announced = re.findall(r"^stage \d+/\d+ .*: (\S+-[0-9a-f]{8})$", output, re.M)
    return announced or re.findall(r"Running stage '([^']+)'", output)
