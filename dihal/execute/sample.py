"""`dihal sample`: text from a spec's trained hybrid, with an optional clamped prompt."""

from __future__ import annotations

from pathlib import Path

import torch

from dihal.compile.plan import plan as make_plan
from dihal.spec.schema import Spec


class SampleError(RuntimeError):
    pass


def sample_texts(
    spec: Spec,
    root: Path,
    depth: int | None,
    *,
    n: int,
    prompt: str = "",
    seed: int = 0,
    steps: int | None = None,
    temperature: float | None = None,
    layer: int | None = None,
) -> list[str]:
    from dihal.bridge.hybrid import DiffusionLM
    from dihal.stages.common import open_backbone, read_json

    if spec.bridge is None:
        raise SampleError("this spec has no bridge section: nothing to sample from")
    root = Path(root)
    p = make_plan(spec, depth)
    trains = [ev.upstream["train"] for ev in p.evaluations]
    trained = [(t, read_json(root / t.out / "meta.json")) for t in trains if (root / t.out / "bridge.pt").exists()]
    if not trained:
        raise SampleError(f"no trained bridge for this spec under {root / 'artifacts'}: run `dihal run` on it first")
    if layer is None:
        sel = root / p.select.out / "selection.json"
        layer = read_json(sel)["layer"] if sel.exists() else trained[0][1]["layer"]
    match = [t for t, m in trained if m["layer"] == layer]
    if not match:
        raise SampleError(f"no bridge trained at layer {layer}; trained: {sorted({m['layer'] for _, m in trained})}")
    from dihal.spec.paths import at_root

    bb, ad = open_backbone(at_root(spec.backbone, root))  # the spec's paths are relative to the project root
    hybrid = DiffusionLM.load(root / match[0].out / "bridge.pt", ad)
    from dihal.data.tokens import resolve_block_start

    start = resolve_block_start(bb.tokenizer, spec.data.block_start)  # the token the bridge was trained after
    ids = [start.id] + (bb.tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else [])
    if len(ids) >= hybrid.seq_len:
        raise SampleError(
            f"the prompt is {len(ids)} tokens with {start.text}; it must be shorter than {hybrid.seq_len}"
        )
    prompts = torch.tensor([ids] * n)
    gen = hybrid.sample(
        prompts,
        steps=steps or spec.eval.sampling_steps,
        temperature=spec.eval.temperature if temperature is None else temperature,
        generator=torch.Generator().manual_seed(seed),
    )
    return [bb.tokenizer.decode(row[len(ids) :].tolist(), skip_special_tokens=True) for row in gen.tokens]
