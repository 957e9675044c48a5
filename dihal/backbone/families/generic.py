"""Any decoder-only causal LM without a family module: hooks on the model's own forward.

No explicit block loop here: how an unknown model builds its masks, positions and block calls is left to
its own `forward`, and dihal only watches and edits the stream between blocks, the way baukit's `Trace`
does, with hooks that exist only inside a `with` (`_Trace`):

- capture: a forward hook on block ℓ records its output h_ℓ (a pre-hook on block 1 records h_0); once the
  deepest requested layer is recorded the hook raises a private exception, so the blocks above and the
  head never run;
- splice at ℓ (the upper stack fed a given h_ℓ): blocks 1..ℓ are *skipped* (their `forward` is swapped, for
  the duration of the call, for one that passes the stream through in the block's own output form) and
  block ℓ's output is replaced by the given h_ℓ; blocks ℓ+1..L, the final norm and the head then run as the
  model runs them. What the skipped blocks cost is the embedding lookup of placeholder ids. With
  `skip_lower=False` blocks 1..ℓ run and only block ℓ's output is overridden (slower, for a model whose loop
  needs more from a block than its hidden state).

The blocks are found generically: the `nn.ModuleList` of identical modules whose length is the config's
layer count (the largest such, by parameters); the head is `model.get_output_embeddings()`; the final norm
is the norm module beside the block list (`final_norm` is informational here: the head runs inside the
model's forward, with whatever the model adds after its last block).
"""

from __future__ import annotations

import torch
from torch import nn

from dihal.backbone.families.base import Family, PositionContext, causal_mask

_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f", "final_norm", "layer_norm")


class _Stop(Exception):
    """Raised by a capture hook once the deepest needed layer is recorded: ends the model's forward early."""


class _Trace:
    """Hooks on the model's forward for the duration of a `with`: capture block outputs, splice a state in.

    `capture`: 1-based layers whose output to record (0: the input of block 1); `stop`: raise `_Stop` after
    recording that layer; `inject`: (ℓ, h) — h replaces h_ℓ (block ℓ's output, or block 1's input for ℓ=0),
    blocks 1..ℓ being skipped when `skip` is set."""

    def __init__(
        self,
        family: GenericFamily,
        capture=(),
        stop: int | None = None,
        inject: tuple[int, torch.Tensor] | None = None,
        skip: bool = True,
    ):
        self.family, self.capture, self.stop, self.inject, self.skip = family, set(capture), stop, inject, skip
        self.states: dict[int, torch.Tensor] = {}
        self._handles: list = []
        self._swapped: list[tuple[nn.Module, object]] = []

    def __enter__(self) -> _Trace:
        blocks, fam = self.family.blocks, self.family
        try:
            if self.inject is not None:
                at, h = self.inject
                if at == 0:
                    self._handles.append(
                        blocks[0].register_forward_pre_hook(
                            lambda _m, args, kwargs: fam.with_input(args, kwargs, h), with_kwargs=True
                        )
                    )
                else:
                    if self.skip:
                        for blk in blocks[:at]:
                            self._swap(blk)
                    replace = blocks[at - 1].register_forward_hook(lambda _m, _i, out: fam.as_output(out, h))
                    self._handles.append(replace)
            if 0 in self.capture:
                self._handles.append(blocks[0].register_forward_pre_hook(self._record_input, with_kwargs=True))
            for layer in sorted(self.capture - {0}):
                self._handles.append(
                    blocks[layer - 1].register_forward_hook(
                        lambda _m, _i, out, layer=layer: self._record(layer, fam.hidden_of(out))
                    )
                )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        for blk, own in self._swapped:
            if own is None:
                del blk.forward
            else:
                blk.forward = own
        self._handles, self._swapped = [], []
        return bool(exc and exc[0] is _Stop)  # the early stop is how a capture ends, not an error

    def _swap(self, blk: nn.Module) -> None:
        """Skip a block: its forward passes the incoming stream on, in the block's output form."""
        fam = self.family
        self._swapped.append((blk, blk.__dict__.get("forward")))
        blk.forward = lambda *args, **kwargs: fam.as_output(None, fam.input_of(args, kwargs))

    def _record_input(self, _m, args, kwargs):
        self._record(0, self.family.input_of(args, kwargs))

    def _record(self, layer: int, h: torch.Tensor) -> None:
        self.states[layer] = h
        if layer == self.stop:
            raise _Stop


class GenericFamily(Family):
    composes = True  # the adapter hands whole compositions (hidden_states, run_blocks, logits_from) to this family
    skip_lower = True

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.core, self.blocks = self.find_blocks(model)
        self.lm_head = model.get_output_embeddings()
        if self.lm_head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None)")
        self.final_norm = self.find_final_norm(self.core)
        self._tuple_tail = self._probe_output_form()

    # -- finding the parts ---------------------------------------------------------
    @staticmethod
    def find_blocks(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
        """(module holding the block list, the blocks): the largest ModuleList of identical modules whose length
        is the config's number of layers."""
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        depth = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        found = []
        for _, mod in model.named_modules():
            for child in mod.children():
                if isinstance(child, nn.ModuleList) and len(child) and len({type(b) for b in child}) == 1:
                    if depth is None or len(child) == depth:
                        found.append((sum(p.numel() for p in child.parameters()), mod, child))
        if not found:
            raise ValueError(f"{type(model).__name__}: no list of {depth} identical blocks found")
        _, core, blocks = max(found, key=lambda t: t[0])
        return core, list(blocks)

    def find_final_norm(self, core: nn.Module) -> nn.Module:
        """The norm beside the block list (by name, else the only child whose class is a norm); identity if none."""
        children = dict(core.named_children())
        for name in _NORM_NAMES:
            if name in children:
                return children[name]
        norms = [m for m in children.values() if "norm" in type(m).__name__.lower()]
        return norms[0] if len(norms) == 1 else nn.Identity()

    def _probe_output_form(self) -> tuple | None:
        """What a block returns (a tensor: None; a tuple: its tail, as None placeholders), from block 1 of a
        two-token forward stopped right after it."""
        seen = []

        def hook(_m, _i, out):
            seen.append(out)
            raise _Stop

        handle = self.blocks[0].register_forward_hook(hook)
        try:
            with torch.no_grad():
                self.model(
                    input_ids=torch.zeros(1, 2, dtype=torch.long, device=self.lm_head.weight.device), use_cache=False
                )
        except _Stop:
            pass
        finally:
            handle.remove()
        out = seen[0]
        return (None,) * (len(out) - 1) if isinstance(out, tuple) else None

    # -- the stream between blocks ---------------------------------------------------
    @staticmethod
    def input_of(args: tuple, kwargs: dict) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]

    @staticmethod
    def with_input(args: tuple, kwargs: dict, h: torch.Tensor):
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    @staticmethod
    def hidden_of(out) -> torch.Tensor:
        return out[0] if isinstance(out, tuple) else out

    def as_output(self, _out, h: torch.Tensor):
        return h if self._tuple_tail is None else (h, *self._tuple_tail)

    # -- running the model's own forward ---------------------------------------------------
    def _forward(self, trace: _Trace, batch: int, length: int, ids: torch.Tensor | None = None):
        """The model's forward under `trace`; placeholder ids where the stream is spliced in anyway."""
        if ids is None:
            ids = torch.zeros(batch, length, dtype=torch.long, device=self.lm_head.weight.device)
        with trace:
            return self.model(input_ids=ids, use_cache=False)
        return None  # stopped early: the trace holds what was captured

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    def hidden_states(self, ids: torch.Tensor, layers: set[int]) -> dict[int, torch.Tensor]:
        trace = _Trace(self, capture=layers, stop=max(layers))
        self._forward(trace, *ids.shape, ids=ids)
        return {layer: trace.states[layer] for layer in layers}

    def run_blocks(self, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if start == stop:
            return h
        trace = _Trace(self, capture={stop}, stop=stop, inject=(start, h), skip=self.skip_lower)
        self._forward(trace, h.shape[0], h.shape[1])
        return trace.states[stop]

    def logits_from(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        trace = _Trace(self, inject=(layer, h), skip=self.skip_lower)
        return self._forward(trace, h.shape[0], h.shape[1]).logits

    # -- the per-piece API, for callers that want it (each is a whole hooked forward) ----------------
    def positions(self, batch: int, length: int, device, dtype) -> PositionContext:
        pos = torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)
        return PositionContext(position_ids=pos, mask=causal_mask(batch, length, device, dtype))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(ids, {0})[0]

    def block(self, index: int, h: torch.Tensor, ctx: PositionContext) -> torch.Tensor:
        return self.run_blocks(h, index - 1, index)

    def head(self, h_last: torch.Tensor) -> torch.Tensor:
        return self.logits_from(h_last, len(self.blocks))


FAMILY = GenericFamily
