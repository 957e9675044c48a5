"""What each compiled stage costs: tokens, FLOPs, peak memory and disk, by arithmetic on the spec and the
backbone's shape (dihal.cost.backbone). Formulas, per stage kind:

- extract: ceil(n_tokens/seq_len) blocks × seq_len tokens through blocks 1..max(candidate layers).
- score: per layer, kNN of anchors among n_tokens states (2·anchors·n·d), covariance (2·n·d²), its eigen-
  decomposition and inverse (~10·d³), sigma's pairs (2·pairs·d²), and n_boot cheap reweighted replicates.
- targets: (n_train+n_val) × seq_len tokens through blocks (previous sweep link, ℓ] (the chain reuses the
  previous layer's states); `layers: selected` is costed at the deepest candidate (ℓ* is not known yet).
- train: 6 · denoiser params · steps·batch·seq tokens (+ attention); C3 baselines add the recovery part.
- evaluate: sampling_steps × n_samples × seq denoiser passes, t-grid validation passes, the upper blocks and
  LM head on the decoded states, and the judge (the full backbone) on n_samples × seq tokens.
- reference: n_samples × (seq-prefix) × (seeds+1) tokens generated with a KV cache (memory-bound: every step
  reads the weights once per batch of 32) plus the judge on 3 × seeds × n_samples × seq tokens.
- frontier: per trained bridge, evaluate's sampling and judge at every (temperature, steps) point: Σ steps ×
  temperatures × n_samples × seq denoiser passes, the upper blocks on each point's states and the judge on each
  point's texts (+ the real text once); the backbone's own, the reference's decoding and judge per temperature.
- summary: reads a few JSON files (one per stage it summarises) and writes one: negligible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from dihal.cost.backbone import BYTES, Shape

# The C3 readout and autoencoder predict over their training vocabulary (the tokens seen in the training blocks), not
# the backbone's: its size by Heaps' law, K·√tokens, fitted on the embedded corpus (4,506 distinct tokens in
# 1024 × 64); a corpus with a richer vocabulary plans low, bounded by the backbone's vocabulary.
HEAPS_K = 18.0
ACT_FACTOR = 6  # live activations per token: a few d-wide tensors plus the MLP's intermediate (see _activations)
DECODE_BATCH = 32  # dihal.stages.reference.BATCH


@dataclass
class StageCost:
    name: str
    kind: str
    tokens: float  # token positions pushed through a network (0: the stage processes no tokens)
    flops: float
    weights_bytes: float = 0.0  # backbone (and denoiser) parameters held in memory
    activation_bytes: float = 0.0  # peak working set besides the weights (activations, optimiser, states in RAM)
    disk_bytes: float = 0.0  # what the stage writes that scales with the run (states, targets)
    load_bytes: float = 0.0  # weights read from disk at start
    bw_bytes: float = 0.0  # bytes streamed by memory-bound decoding
    deps: set[str] = field(default_factory=set)
    note: str = ""
    seconds: float = 0.0

    @property
    def peak_bytes(self) -> float:
        return self.weights_bytes + self.activation_bytes

    def as_dict(self) -> dict:
        d = asdict(self)
        d["deps"] = sorted(self.deps)
        d["peak_bytes"] = self.peak_bytes
        return d


def denoiser_params(
    d_in: int,
    d_model: int,
    depth: int,
    heads: int = 4,
    max_len: int = 64,
    time_cond: str = "adaln",
    pos: str = "sinusoidal",
    mlp_ratio: float = 4,
    self_condition: bool = False,
) -> int:
    """`sum(p.numel() for p in Denoiser(...).parameters())`, by formula (tested against the real module)."""
    return sum(denoiser_parts(d_in, d_model, depth, max_len, time_cond, pos, mlp_ratio, self_condition).values())


def denoiser_parts(
    d_in: int,
    dm: int,
    depth: int,
    max_len: int,
    time_cond: str = "adaln",
    pos: str = "sinusoidal",
    mlp_ratio: float = 4,
    self_condition: bool = False,
) -> dict[str, int]:
    """Parameter counts by role: `per_token` act on every position, `per_sample` once per sequence, `lookup`
    are tables read (no FLOPs). Self-conditioning adds one bias-free d_in→dm projection."""
    hidden = int(round(mlp_ratio * dm))
    adaln = time_cond == "adaln"
    block = (dm * 3 * dm + 3 * dm) + (dm * dm + dm) + (dm * hidden + hidden) + (hidden * dm + dm)
    if not adaln:
        block += 4 * dm  # the two LayerNorms' own affine
    per_token = (d_in * dm + dm) + depth * block + (dm * d_in + d_in) + (0 if adaln else 2 * dm)
    per_token += d_in * dm if self_condition else 0
    per_sample = 2 * (dm * dm + dm) + ((depth * (6 * dm * dm + 6 * dm) + 2 * dm * dm + 2 * dm) if adaln else 0)
    lookup = 2 * dm + (max_len * dm if pos == "learned" else 0)
    return {"per_token": per_token, "per_sample": per_sample, "lookup": lookup}


def _denoiser_flops(parts: dict, tokens: float, seqs: float, seq: int, dm: int, depth: int) -> float:
    """Forward FLOPs: 2·params per token (per sequence for the time path) + bidirectional attention."""
    return 2 * parts["per_token"] * tokens + 2 * parts["per_sample"] * seqs + tokens * depth * 4 * seq * dm


def _latent_ae_params(d_in: int, width: int, vocab: int, dm: int, depth: int, max_len: int) -> int:
    """dihal.interfaces.latent_ae: a causal encoder d→width and a bidirectional decoder width→vocab (_Stack)."""
    block = 12 * dm * dm + 13 * dm  # nn.TransformerEncoderLayer with 4·dm feed-forward
    stack = lambda i, o: i * dm + dm + max_len * dm + depth * block + 2 * dm + dm * o + o  # noqa: E731
    return stack(d_in, width) + stack(width, vocab)


def training_vocab(tokens: float, vocab: int) -> float:
    """Distinct tokens expected in `tokens` positions of text (Heaps' law, HEAPS_K), at most the vocabulary."""
    return min(float(vocab), HEAPS_K * math.sqrt(tokens))


def _activations(shape: Shape, batch: int, seq: int, nbytes: int) -> float:
    per_token = ACT_FACTOR * shape.d + 2 * shape.inter
    return batch * seq * per_token * nbytes + batch * shape.heads * seq * seq * nbytes  # + one attention map


class Coster:
    def __init__(self, spec, shape: Shape, candidates: list[int]) -> None:
        self.spec, self.s = spec, shape
        self.nb = BYTES[spec.backbone.dtype]
        self.weights = shape.params * self.nb
        self.candidates = candidates

    def stage(self, st) -> StageCost:
        cost = getattr(self, st.kind)(st.params, st)
        cost.deps = {u.name for u in st.upstream.values()} | ({st.link.name} if st.link else set())
        return cost

    def extract(self, p, st) -> StageCost:
        g, s = p["geometry"], self.s
        layers = list(g["layers"] or self.candidates)
        blocks = math.ceil(g["n_tokens"] / g["seq_len"])
        tokens = blocks * g["seq_len"]
        return StageCost(
            st.name,
            "extract",
            tokens,
            s.forward_flops(tokens, 1, max(layers), g["seq_len"]),
            self.weights,
            _activations(s, g["batch_size"], g["seq_len"], self.nb),
            g["n_tokens"] * s.d * 4 * len(layers),
            self.weights,
            note=f"{blocks} blocks through 1..{max(layers)}; {len(layers)} layers stored",
        )

    def score(self, p, st) -> StageCost:
        g, d = p["geometry"], self.s.d
        up = st.upstream["extract"].params["geometry"]
        n, layers = up["n_tokens"], len(up["layers"] or self.candidates)
        spaces = len({g.get("space"), *(g.get("spaces") or ())} - {None}) or 1  # each space is scored in full
        r = 32  # stability's top-r eigen-directions
        per_layer = (
            2 * g["anchors"] * n * d
            + 2 * n * d * d
            + 10 * d**3
            + 2 * g["pairs"] * d * d
            + g["n_boot"] * (g["anchors"] + 2 * g["pairs"] * r + 2 * r * r * d)
        )
        mem = n * d * 4 * 2 + g["anchors"] * min(n, 4096) * 4 + 3 * d * d * 8
        return StageCost(
            st.name,
            "score",
            n * layers,
            per_layer * layers * spaces,
            0,
            mem,
            note=f"{layers} layers × {n} states × {spaces} space{'s' * (spaces > 1)}; kNN {g['anchors']} anchors, "
            f"n_boot {g['n_boot']}",
        )

    def select(self, p, st) -> StageCost:
        return StageCost(st.name, "select", 0, 10.0 * max(1, len(self.candidates)), note="argmax over G: negligible")

    def correlate(self, p, st) -> StageCost:
        n = len([k for k in st.upstream if k.startswith("evaluate")])
        return StageCost(
            st.name,
            "correlate",
            0,
            50.0 * p["n_boot"] * max(1, n) + 1,
            note=f"{p['n_boot']} bootstrap replicates over {n} evaluations: negligible",
        )

    def frontier(self, p, st) -> StageCost:
        s, fr = self.s, p["frontier"]
        n, temps = fr["n_samples"], len(fr["temperatures"])
        if "train" not in st.upstream:  # the backbone's own: the reference stage's decoding, per temperature
            runs = len(p["seeds"]) * temps
            return self._backbone_decoding(
                st,
                "frontier",
                n,
                p["bridge"],
                runs,
                n * p["bridge"]["seq_len"] * (runs + 1),
                f"backbone at {temps} temperatures: ",
            )
        tp = st.upstream["train"].params
        seq, d_in = tp["seq_len"], self._d_in(tp)
        sc = tp.get("self_condition", False)
        parts = denoiser_parts(d_in, tp["d_model"], tp["depth"], seq, tp["time_cond"], tp["pos"], self_condition=sc)
        layer = self._layer(st.upstream["targets"])[0] if "targets" in st.upstream else 0  # a baseline: whole stack
        points = temps * len(fr["steps"])
        den_seqs = sum(fr["steps"]) * temps * n * (2 if sc else 1)
        den = _denoiser_flops(parts, den_seqs * seq, den_seqs, seq, tp["d_model"], tp["depth"])
        upper = s.forward_flops(points * n * seq, layer + 1, s.layers, seq, head=True)
        judge = s.forward_flops((points + 1) * n * seq, 1, s.layers, seq, head=True)
        return StageCost(
            st.name,
            "frontier",
            den_seqs * seq + (2 * points + 1) * n * seq,
            den + upper + judge,
            self.weights + sum(parts.values()) * 4,
            _activations(s, n, seq, self.nb) + n * seq * s.vocab * 4,
            0,
            self.weights,
            note=f"{points} points ({temps} temperatures × steps {list(fr['steps'])}) × {n} samples; judge on each",
        )

    def summary(self, p, st) -> StageCost:
        n = len(st.upstream)
        return StageCost(st.name, "summary", 0, 100.0 * n, note=f"reads the outputs of {n} stages: negligible")

    def _layer(self, st) -> tuple[int, bool]:
        layer = st.params.get("layer")
        if layer in (None, "selected"):
            return max(self.candidates), True
        return int(layer), False

    def targets(self, p, st) -> StageCost:
        b, s = p["bridge"], self.s
        layer, guess = self._layer(st)
        first = int(st.link.params["layer"]) + 1 if st.link else 1
        n = b["n_train"] + b["n_val"]
        tokens = n * b["seq_len"]
        how = f"at ℓ ≤ {layer} (ℓ* unknown: deepest candidate)" if guess else f"blocks {first}..{layer}"
        return StageCost(
            st.name,
            "targets",
            tokens,
            s.forward_flops(tokens, first, layer, b["seq_len"]),
            self.weights,
            _activations(s, b["extract_batch_size"], b["seq_len"], self.nb),
            tokens * s.d * 4,
            self.weights,
            note=f"{n} blocks, {how}",
        )

    def _d_in(self, p) -> int:
        iface = p.get("interface")
        if iface and iface["name"] == "latent_ae":
            return iface.get("latent_width") or self.s.d
        return self.s.d

    def train(self, p, st) -> StageCost:
        s, seq = self.s, p["seq_len"]
        d_in = self._d_in(p)
        sc = p.get("self_condition", False)
        parts = denoiser_parts(d_in, p["d_model"], p["depth"], seq, p["time_cond"], p["pos"], self_condition=sc)
        n_params = sum(parts.values())
        seqs = p["steps"] * p["batch_size"]
        tokens = seqs * seq
        # forward + backward (3 forwards), and with self-conditioning a no-gradient first pass on half the steps
        flops = (3.5 if sc else 3) * _denoiser_flops(parts, tokens, seqs, seq, p["d_model"], p["depth"])
        act = p["batch_size"] * seq * p["d_model"] * p["depth"] * 16 * 4  # fp32 activations kept for backward
        blocks = p["blocks"] if "blocks" in p else st.upstream["targets"].params["bridge"]
        states = (blocks["n_train"] + blocks["n_val"]) * seq * d_in * 4
        weights, load, note = n_params * 16, 0.0, f"denoiser {n_params / 1e6:.2f}M params (fp32 + AdamW state)"
        iface = p.get("interface")
        if iface:  # C3: the baseline samples its blocks itself and reads the backbone's embeddings
            weights, load = weights + self.weights, self.weights
            rec_tokens = iface.get("recovery_steps", 0) * iface.get("recovery_batch_tokens", 0)
            vocab = training_vocab(blocks["n_train"] * seq, s.vocab)
            if iface["name"] == "embedding_readout":
                flops += 6 * d_in * vocab * rec_tokens
                tokens += rec_tokens
            elif iface["name"] == "latent_ae":
                ae = _latent_ae_params(s.d, d_in, vocab, iface["latent_d_model"], iface["latent_depth"], seq)
                flops += 6 * ae * rec_tokens
                tokens += rec_tokens
                weights += ae * 16
            seen = (
                f" (training vocabulary ≈ {vocab:,.0f})" if iface["name"] in ("embedding_readout", "latent_ae") else ""
            )
            note = f"C3 {iface['name']}{seen}; " + note
        return StageCost(st.name, "train", tokens, flops, weights, act + states, 0, load, note=note)

    def evaluate(self, p, st) -> StageCost:
        s, ev = self.s, p["eval"]
        tp = st.upstream["train"].params
        seq, d_in = tp["seq_len"], self._d_in(tp)
        sc = tp.get("self_condition", False)
        parts = denoiser_parts(d_in, tp["d_model"], tp["depth"], seq, tp["time_cond"], tp["pos"], self_condition=sc)
        if "targets" in st.upstream:
            layer, _ = self._layer(st.upstream["targets"])
            n_val = st.upstream["targets"].params["bridge"]["n_val"]
        else:  # a C3 baseline: decoding costed as the whole backbone (upper bound)
            layer, n_val = 0, tp["blocks"]["n_val"]
        n = ev["n_samples"]
        val_seqs = min(ev["val_batches"], n_val) * len(ev["t_grid"]) * tp["batch_size"] + n_val
        val_seqs *= 2 if sc else 1  # a self-conditioned estimate is two passes
        den_seqs = ev["sampling_steps"] * n + val_seqs
        den = _denoiser_flops(parts, den_seqs * seq, den_seqs, seq, tp["d_model"], tp["depth"])
        upper = s.forward_flops((n + n_val) * seq, layer + 1, s.layers, seq, head=True)
        judge = s.forward_flops(n * seq, 1, s.layers, seq, head=True)
        return StageCost(
            st.name,
            "evaluate",
            den_seqs * seq + (2 * n + n_val) * seq,
            den + upper + judge,
            self.weights + sum(parts.values()) * 4,
            _activations(s, n, seq, self.nb) + n * seq * s.vocab * 4,
            0,
            self.weights,
            note=f"{ev['sampling_steps']} DDIM steps × {n} samples; judge on {n}×{seq}",
        )

    def reference(self, p, st) -> StageCost:
        n, b, seeds = p["n_samples"], p["bridge"], len(p["seeds"])
        return self._backbone_decoding(st, "reference", n, b, seeds + 1, 3 * seeds * n * b["seq_len"])

    def _backbone_decoding(self, st, kind: str, n: int, b: dict, runs: int, judged: int, what: str = "") -> StageCost:
        """`runs` batches of n prompts continued by the backbone with a KV cache (memory-bound: every step reads the
        weights once per DECODE_BATCH sequences), plus the judge on `judged` tokens: the reference stage and the
        backbone's frontier."""
        s, seq = self.s, b["seq_len"]
        gen = n * (seq - b["prefix"]) * runs
        flops = s.forward_flops(gen, 1, s.layers, seq, head=True) + s.forward_flops(judged, 1, s.layers, seq, head=True)
        steps = runs * math.ceil(n / DECODE_BATCH) * (seq - b["prefix"])
        kv = 2 * s.layers * s.kv_heads * s.head_dim * seq * min(n, DECODE_BATCH) * self.nb
        return StageCost(
            st.name,
            kind,
            gen + judged,
            flops,
            self.weights,
            kv + _activations(s, min(n, DECODE_BATCH), seq, self.nb),
            0,
            self.weights,
            bw_bytes=steps * self.weights,
            note=f"{what}{gen} tokens decoded with KV cache ({steps} steps), {judged} judged",
        )
