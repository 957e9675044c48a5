"""The bridge's denoiser: a small bidirectional transformer over sequence positions.

It is generic over sequences of d_in-dim vectors and knows nothing of language models.
Design choices, and why:

- Bidirectional attention: the bridge generates the whole hidden-state sequence jointly;
  causality is imposed later by the frozen upper blocks, not here.
- adaLN-Zero time conditioning (DiT) by default: the time embedding produces per-block
  shift/scale/gate, with the modulation layers zero-initialised so every block starts as
  the identity. 'add' (time embedding added to every token) is the cheaper ablation.
- The clamp mask enters as a learned 2-row embedding added to the input: a clamped position
  holds a clean vector, an unclamped one a noisy vector, and the network must be told which.
- The output projection is zero-initialised, so the untrained model predicts 0 everywhere.
  On standardised targets 0 is the best constant prediction for every objective (x0, eps
  and v all have zero mean), so training starts at loss ~1 instead of from a random
  function's error, which makes short fixed-budget layer sweeps less seed-sensitive.
- Self-conditioning (Chen et al. 2022, "Analog Bits"; used by LD4LG and CDCD), when built with
  self_condition=True: forward takes an estimate of x0 as a second input, added to the input
  projection through its own bias-free linear map -- the same function as concatenating it to x_t
  before `inp`. That map is zero-initialised, so the model starts as the one without it; an absent
  estimate (None) means zeros, which the map sends to exactly 0. Built without it, the module has
  no such parameter at all and computes what it always did.
- No dropout, so forward is a deterministic function of (weights, inputs).
- Parameters are built on the meta device and initialised from a torch.Generator seeded by
  `seed`: construction never touches (or advances) torch's global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TIME_CONDS = ("adaln", "add")
POSITIONS = ("sinusoidal", "learned")


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids of a 1-D tensor of (possibly fractional) positions -> (n, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=x.device) / half)
    args = x.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(torch.float32)


class _Attention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # no mask: bidirectional, fixed length
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """Pre-norm transformer block; with adaLN the norms have no affine of their own because
    the time-dependent shift/scale replaces it."""

    def __init__(self, d_model: int, heads: int, hidden: int, adaln: bool) -> None:
        super().__init__()
        self.adaln = adaln
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=not adaln)
        self.attn = _Attention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=not adaln)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.modulation = nn.Linear(d_model, 6 * d_model) if adaln else None

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.modulation is None:
            h = h + self.attn(self.norm1(h))
            return h + self.mlp(self.norm2(h))
        shift1, scale1, gate1, shift2, scale2, gate2 = (
            m[:, None, :] for m in self.modulation(F.silu(c)).chunk(6, dim=-1)
        )
        h = h + gate1 * self.attn(self.norm1(h) * (1 + scale1) + shift1)
        return h + gate2 * self.mlp(self.norm2(h) * (1 + scale2) + shift2)


class Denoiser(nn.Module):
    """f(x_t, t, clamp_mask) -> (B, T, d_in); what the output means (x0, eps or v) is decided
    by the objective in dihal.bridge.diffusion, not here."""

    def __init__(
        self,
        d_in: int,
        *,
        d_model: int = 128,
        depth: int = 3,
        heads: int = 4,
        max_len: int = 64,
        time_cond: str = "adaln",
        pos: str = "sinusoidal",
        mlp_ratio: float = 4,
        self_condition: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("d_in", d_in),
            ("d_model", d_model),
            ("depth", depth),
            ("heads", heads),
            ("max_len", max_len),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if d_model % heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        if d_model % 2 != 0:
            raise ValueError(f"d_model must be even for the sinusoidal embeddings, got {d_model}")
        if time_cond not in TIME_CONDS:
            raise ValueError(f"time_cond must be one of {TIME_CONDS}, got {time_cond!r}")
        if pos not in POSITIONS:
            raise ValueError(f"pos must be one of {POSITIONS}, got {pos!r}")
        if not isinstance(mlp_ratio, (int, float)) or isinstance(mlp_ratio, bool) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        hidden = int(round(mlp_ratio * d_model))
        if hidden < 1:
            raise ValueError(f"mlp_ratio * d_model must be >= 1, got {mlp_ratio} * {d_model}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if not isinstance(self_condition, bool):
            raise ValueError(f"self_condition must be true or false, got {self_condition!r}")

        self.config = dict(
            d_in=d_in,
            d_model=d_model,
            depth=depth,
            heads=heads,
            max_len=max_len,
            time_cond=time_cond,
            pos=pos,
            mlp_ratio=mlp_ratio,
            self_condition=self_condition,
            seed=seed,
        )
        self.d_in, self.d_model, self.max_len = d_in, d_model, max_len
        self.self_condition = self_condition
        adaln = time_cond == "adaln"
        with torch.device("meta"):
            self.inp = nn.Linear(d_in, d_model)
            self.mask_embed = nn.Embedding(2, d_model)
            self.pos_embed = nn.Parameter(torch.empty(max_len, d_model)) if pos == "learned" else None
            self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
            self.blocks = nn.ModuleList(_Block(d_model, heads, hidden, adaln) for _ in range(depth))
            self.final_norm = nn.LayerNorm(d_model, elementwise_affine=not adaln)
            self.final_modulation = nn.Linear(d_model, 2 * d_model) if adaln else None
            self.out = nn.Linear(d_model, d_in)
            # Registered last, so the other parameters draw the same initial values with or without it.
            self.self_cond = nn.Linear(d_in, d_model, bias=False) if self_condition else None
        self.to_empty(device="cpu")
        self.register_buffer(
            "pos_table",
            sinusoidal_embedding(torch.arange(max_len), d_model) if pos == "sinusoidal" else None,
            persistent=False,
        )
        self._init_parameters(torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def _init_parameters(self, gen: torch.Generator) -> None:
        done: set[int] = set()

        def mark(*params: torch.Tensor | None) -> None:
            done.update(id(p) for p in params if p is not None)

        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=gen)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
                mark(module.weight, module.bias)
            elif isinstance(module, nn.LayerNorm):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                    mark(module.weight, module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02, generator=gen)
                mark(module.weight)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02, generator=gen)
            mark(self.pos_embed)
        # adaLN-Zero and a zero output layer: see the module docstring.
        zero = [self.out] + [b.modulation for b in self.blocks] + [self.final_modulation, self.self_cond]
        for layer in zero:
            if layer is not None:
                nn.init.zeros_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        missed = [name for name, p in self.named_parameters() if id(p) not in done]
        if missed:  # memory from to_empty() is garbage: never let a parameter keep it
            raise RuntimeError(f"parameters left uninitialised: {missed}")

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, clamp_mask: torch.Tensor, x0_self: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x_t.ndim != 3 or x_t.shape[-1] != self.d_in:
            raise ValueError(f"x_t must be (B, T, {self.d_in}), got {tuple(x_t.shape)}")
        b, n, _ = x_t.shape
        if n > self.max_len:
            raise ValueError(f"sequence length T={n} exceeds max_len={self.max_len}")
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        if clamp_mask.dtype != torch.bool or clamp_mask.shape != (b, n):
            raise ValueError(
                f"clamp_mask must be a bool ({b}, {n}) tensor, got {clamp_mask.dtype} {tuple(clamp_mask.shape)}"
            )
        pos = self.pos_embed if self.pos_embed is not None else self.pos_table
        h = self.inp(x_t) + pos[:n] + self.mask_embed(clamp_mask.long())
        if x0_self is not None:
            if self.self_cond is None:
                raise ValueError("x0_self given to a denoiser built without self_condition")
            if x0_self.shape != x_t.shape:
                raise ValueError(f"x0_self must have x_t's shape {tuple(x_t.shape)}, got {tuple(x0_self.shape)}")
            h = h + self.self_cond(x0_self)
        # t * 1000 spreads [0, 1] over the sinusoid frequencies as for integer DDPM steps.
        c = self.time_mlp(sinusoidal_embedding(t * 1000.0, self.d_model).to(h.dtype))
        if self.final_modulation is None:
            h = h + c[:, None, :]
        for block in self.blocks:
            h = block(h, c)
        h = self.final_norm(h)
        if self.final_modulation is not None:
            shift, scale = (m[:, None, :] for m in self.final_modulation(F.silu(c)).chunk(2, -1))
            h = h * (1 + scale) + shift
        return self.out(h)
