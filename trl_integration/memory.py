"""An estimate of GPU memory per device for a DoRA/LoRA run, from the model's config alone.

Three parts, each counted from shapes (the model is built on PyTorch's meta device: no weights, no memory):

- **base weights**: every parameter, in the base dtype (under DDP each device holds them all);
- **adapters + optimizer**: 16 bytes per trainable parameter (fp32 weight, fp32 gradient, AdamW's two
  fp32 moments);
- **activations** that autograd keeps for backward, per token of the per-device batch at the cutoff
  length, for a LLaMA-style decoder with ``L`` layers, hidden ``h``, key/value width ``kv``, MLP width ``i``
  and activations of ``e`` bytes (2 in half precision, 4 in fp32)::

      layer = 8h                    the two RMSNorms keep their input in fp32
            + e (2h + 2kv)          rotated q and k, v, the attention output (SDPA keeps no s x s matrix)
            + 3e i                  MLP: gate output, its activation, up output
            + per adapted module    4r (A x, fp32)
                                    + with dropout: 5 in (fp32 dropped input + 1-byte mask), DoRA also 4 out
                                    + without: 4 in (fp32 copy of a half input), DoRA also e out
      head  = 4h + V (e + 8)        final norm; logits, their fp32 log-probabilities and fp32 gradient

  Without gradient checkpointing: ``L x layer + head``. With it each layer keeps only its input (``e h``)
  and one layer's activations are rebuilt during its backward: ``L e h + layer + head``.

Not counted: the CUDA context and allocator slack (typically 1-3 GiB), DDP's gradient buckets (4 bytes per
trainable parameter), temporaries inside a single operation. The activation terms were checked against the
tensors autograd saves on a small LLaMA (``tests/trl_tests/test_trl_plan.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
OPTIMIZER_BYTES = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq, per trainable parameter


@dataclass(frozen=True)
class Adapted:
    """One adapted linear layer: its input and output widths, the rank, DoRA or not, dropout or not."""

    in_features: int
    out_features: int
    rank: int
    dora: bool
    dropout: bool


@dataclass(frozen=True)
class Shape:
    """What the activation estimate needs from a model config."""

    layers: int
    hidden: int
    kv_width: int
    intermediate: int
    vocab: int


def model_shape(config) -> Shape:
    """The :class:`Shape` of a transformers config (LLaMA-style names; GQA through ``num_key_value_heads``)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return Shape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        kv_width=kv_heads * head_dim,
        intermediate=getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
        vocab=config.vocab_size,
    )


def adapter_bytes(module: Adapted, act_bytes: int) -> int:
    """Bytes per token that one adapted layer keeps for backward (see the module docstring)."""
    size = 4 * module.rank
    if module.dropout:
        return size + 5 * module.in_features + (4 * module.out_features if module.dora else 0)
    size += 4 * module.in_features if act_bytes < 4 else 0
    return size + (act_bytes * module.out_features if module.dora else 0)


def layer_bytes(shape: Shape, adapted: list[Adapted], act_bytes: int) -> int:
    """Bytes per token that one decoder layer keeps for backward; ``adapted`` lists the whole model's adapters."""
    base = 8 * shape.hidden + act_bytes * (2 * shape.hidden + 2 * shape.kv_width + 3 * shape.intermediate)
    return base + sum(adapter_bytes(module, act_bytes) for module in adapted) // shape.layers


def head_bytes(shape: Shape, act_bytes: int) -> int:
    """Bytes per token of the final norm, the logits, their fp32 log-probabilities and gradient."""
    return 4 * shape.hidden + shape.vocab * (act_bytes + 8)


def activation_bytes(shape: Shape, adapted: list[Adapted], act_bytes: int, tokens: int, checkpointing: bool) -> int:
    """Activation memory of one forward/backward over ``tokens`` tokens (per-device batch x cutoff)."""
    layer = layer_bytes(shape, adapted, act_bytes)
    kept = shape.layers * act_bytes * shape.hidden + layer if checkpointing else shape.layers * layer
    return tokens * (kept + head_bytes(shape, act_bytes))


@dataclass(frozen=True)
class MemoryEstimate:
    """GPU memory per device, in bytes, by part."""

    weights: int
    trainable_state: int
    activations: int
    activations_checkpointed: int

    def total(self, checkpointing: bool) -> int:
        activations = self.activations_checkpointed if checkpointing else self.activations
        return self.weights + self.trainable_state + activations
