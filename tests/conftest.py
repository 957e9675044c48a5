import os

import pytest

from tests.tiny import save_tiny

os.environ.setdefault("DIHAL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")
