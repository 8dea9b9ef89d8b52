"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017, arXiv:1706.03762) for transformers.

The file follows §3 of the paper, in its order: positional encoding (§3.5), scaled dot-product attention (§3.2.1,
Eq. 1), multi-head attention (§3.2.2), position-wise feed-forward (§3.3, Eq. 2), encoder and decoder layers (§3.1),
the stacks, embeddings and softmax (§3.4), and the label-smoothed loss (§5.4). It imports only torch, transformers
and the standard library, so that it runs as remote code (`trust_remote_code=True`) where this package is absent.

Shapes: `batch` sentences, `src_len` source tokens, `tgt_len` target tokens, `heads` = h, `head_dim` = d_model / h.
"""

import inspect
import math
import os
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_vaswani_transformer import VaswaniTransformerConfig
from .generation_vaswani_transformer import beam_search, length_penalty_type, unsupported_reason


__all__ = [
    "VaswaniTransformerForConditionalGeneration",
    "VaswaniTransformerModel",
    "VaswaniTransformerPreTrainedModel",
    "decoder_cache",
    "dropout",
    "label_smoothed_cross_entropy",
    "scaled_dot_product_attention",
    "shift_tokens_right",
    "sinusoidal_positional_encoding",
]

# transformers 5.25 renamed the decoder's key/value cache from `past_key_values` to `cache`: in what `generate()`
# passes to `forward`, in the model outputs and in `create_causal_mask`. A saved model runs as remote code on every
# release from 5.4 on, so the forwards take both names (`decoder_cache`) and use the installed release's name for
# the others.
OUTPUT_CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"
MASK_CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def decoder_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The decoder cache a `forward` was given, under its name since transformers 5.25 (`cache`) or before it
    (`past_key_values`, what `generate()` passes on 5.4 to 5.24).

    Raises:
        ValueError: if both are given.
    """
    if past_key_values is None:
        return cache
    if cache is not None:
        raise ValueError("give the decoder cache as `cache` or as `past_key_values` (its name before 5.25), not both")
    return past_key_values


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing input: `[start, y_1, ..., y_{n-1}]` from labels `[y_1, ..., y_n]` (§3.1, "shifted right").

    Args:
        labels: `(batch, tgt_len)` target ids; -100 marks ignored positions and becomes `pad_token_id`.
    Returns:
        `(batch, tgt_len)` decoder input ids.
    """
    decoder_input_ids = labels.new_empty(labels.shape)
    decoder_input_ids[:, 1:] = labels[:, :-1]
    decoder_input_ids[:, 0] = decoder_start_token_id
    return decoder_input_ids.masked_fill_(decoder_input_ids == -100, pad_token_id)


# §3.5 Positional encoding ---------------------------------------------------------------------------------------


def sinusoidal_positional_encoding(
    num_positions: int, d_model: int, layout: str = "interleaved", offset: int = 0
) -> torch.Tensor:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    Args:
        num_positions: how many consecutive positions, starting at `offset` (0-based, as in the paper).
        d_model: encoding width.
        layout: "interleaved" puts sin and cos of frequency i at dimensions 2i and 2i+1 (the paper);
            "concatenated" puts all sines first, then all cosines (tensor2tensor, fairseq, Marian).
    Returns:
        `(num_positions, d_model)` float32 tensor, computed in float64 then rounded once.
    Raises:
        ValueError: unknown `layout`.
    """
    position = torch.arange(offset, offset + num_positions, dtype=torch.float64).unsqueeze(1)  # (positions, 1)
    inverse_frequency = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (ceil(d/2),)
    angles = position * inverse_frequency  # (positions, ceil(d/2))
    if layout == "interleaved":
        encoding = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :d_model]  # (positions, d_model)
    elif layout == "concatenated":
        encoding = torch.cat([angles.sin(), angles.cos()[:, : d_model // 2]], dim=-1)  # (positions, d_model)
    else:
        raise ValueError(f"Unknown positional encoding layout {layout!r}; use 'interleaved' or 'concatenated'.")
    return encoding.float()


class VaswaniTransformerPositionalEncoding(nn.Module):
    """§3.5: the fixed sinusoidal encodings, precomputed for `max_position_embeddings` positions.

    Positions beyond the table are computed on the fly ("it may allow the model to extrapolate to sequence lengths
    longer than the ones encountered during training"), so no input is too long for the encoding itself.
    """

    def __init__(self, config: VaswaniTransformerConfig):
        super().__init__()
        self.d_model = config.d_model
        self.layout = config.positional_encoding_layout
        self.register_buffer("table", self.compute_table(config.max_position_embeddings), persistent=False)

    def compute_table(self, num_positions: int) -> torch.Tensor:
        return sinusoidal_positional_encoding(num_positions, self.d_model, self.layout)

    def forward(self, seq_len: int, past_length: int = 0) -> torch.Tensor:
        """Encodings of positions `past_length ... past_length + seq_len - 1`, shape `(seq_len, d_model)`."""
        end = past_length + seq_len
        if end <= self.table.shape[0]:
            return self.table[past_length:end]
        encoding = sinusoidal_positional_encoding(seq_len, self.d_model, self.layout, offset=past_length)
        return encoding.to(self.table.device)


# §5.4 Dropout -------------------------------------------------------------------------------------------------------

# Dropout draws its keep mask from 16-bit halves of 64-bit random words: one draw of PyTorch's CPU generator for
# every four elements instead of one per element. The drop probability is rounded to a multiple of 2^-16.
_DROPOUT_LEVELS = 1 << 16


def dropout(input: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """§5.4: zero each element with probability `p` and scale the rest by 1 / (1 - p) ("inverted" dropout,
    Srivastava et al. 2014, as `torch.nn.functional.dropout`); the identity when not training or `p` is 0.

    On CPU the keep mask comes from `_DROPOUT_LEVELS`-level uniforms: PyTorch's per-element Bernoulli draw is the
    slowest kernel there (11 ms for 2M elements on 2 cores against 3 ms here; 14% of a bf16 step of the Multi30k CPU
    preset). `p` is rounded to a multiple of 2^-16 (0.1 becomes 0.100006). Other devices, and code under
    `torch.compile`, use `F.dropout`. The mask is applied as a product with a 1.0 / 0.0 tensor of `input`'s dtype,
    which backward keeps (`F.dropout` keeps a boolean mask: 1 byte an element instead of 2 in bf16, 4 in fp32); a
    dropped element is 0 times its input (-0.0 for a negative one, NaN for an infinite one).

    Args:
        input: any shape; p: drop probability in [0, 1]; training: dropout is applied only when True.
    Returns:
        a tensor of `input`'s shape and dtype.
    Raises:
        ValueError: if `p` is outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if input.device.type != "cpu" or p == 1.0 or torch.compiler.is_compiling():
        return F.dropout(input, p=p, training=True)
    count = input.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # every 64-bit value alike
    uniform = words.view(torch.int16)[:count].view(input.shape)  # uniform on [-2^15, 2^15)
    # The keep mask as 1.0 / 0.0 in input's dtype (the comparison writes it directly, probability of 0.0:
    # round(p * 2^16) / 2^16): a same-dtype product is ~6x faster than masked_fill's boolean mask on CPU, and it is
    # also what autograd saves for backward (grad * keep * scale).
    keep = torch.ge(
        uniform, round(p * _DROPOUT_LEVELS) - _DROPOUT_LEVELS // 2, out=torch.empty_like(uniform, dtype=input.dtype)
    )
    return (input * keep).mul_(1.0 / (1.0 - p))


_dropout = dropout  # for functions whose `dropout` argument (the attention interface's keyword) shadows it


# §3.2.1 Scaled dot-product attention ------------------------------------------------------------------------------


def scaled_dot_product_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.2.1, Eq. 1: Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V. The "eager" attention implementation.

    Args:
        query: `(batch, heads, tgt_len, head_dim)`; key, value: `(batch, heads, src_len, head_dim)`.
        attention_mask: additive mask broadcastable to `(batch, heads, tgt_len, src_len)`, a large negative value
            where attention is forbidden (padding, future positions: "setting to -inf", §3.2.3), or None.
        scaling: 1 / sqrt(d_k); defaults to `head_dim ** -0.5`.
        dropout: dropout probability on the attention weights (0 in the paper), applied by `dropout` above.
    Returns:
        `(batch, tgt_len, heads, head_dim)` attention output and `(batch, heads, tgt_len, src_len)` weights.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (batch, heads, tgt_len, src_len)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = _dropout(weights, dropout, module.training)
    output = torch.matmul(weights, value)  # (batch, heads, tgt_len, head_dim)
    return output.transpose(1, 2).contiguous(), weights  # (batch, tgt_len, heads, head_dim)


# transformers' name for the eager attention function (Marian, Llama). transformers 5.4 to 5.10 at least let
# `set_attn_implementation` switch a model only if its modeling file holds this name and
# `ALL_ATTENTION_FUNCTIONS.get_interface(` (`PreTrainedModel._can_set_attn_implementation`); later releases look only
# for the latter.
eager_attention_forward = scaled_dot_product_attention


# §3.2.2 Multi-head attention ------------------------------------------------------------------------------------


# Attention implementations that accept a query length other than the key length with a 4D mask (or none), so that
# the beams of a sentence can be folded into the query length of encoder-decoder attention.
SHARED_ENCODER_OUTPUT_IMPLEMENTATIONS = ("sdpa", "eager")


def shared_encoder_output_beams(batch: int, sentences: int, attn_implementation: str | None) -> int:
    """Number of decoder rows per encoder row when the decoder batch is larger than the encoder batch.

    During beam search (and sampling with `num_return_sequences`), `generate` gives the decoder `batch * beams` rows
    and, for this model, the encoder output of the `batch` sentences only (`_expand_inputs_for_generation`): rows
    `i * beams ... i * beams + beams - 1` of the decoder belong to sentence i.

    Raises:
        ValueError: if `batch` is not a multiple of `sentences`, or the attention implementation cannot fold.
    """
    if sentences <= 0 or batch % sentences:
        raise ValueError(
            f"decoder batch {batch} is not a multiple of the encoder batch {sentences}: encoder_hidden_states must "
            "have one row per decoder row, or one per sentence with the beams of a sentence in adjacent rows"
        )
    if attn_implementation not in SHARED_ENCODER_OUTPUT_IMPLEMENTATIONS:
        raise ValueError(
            f"a decoder batch ({batch}) larger than the encoder batch ({sentences}) needs attn_implementation in "
            f"{SHARED_ENCODER_OUTPUT_IMPLEMENTATIONS}, not {attn_implementation!r}"
        )
    return batch // sentences


class VaswaniTransformerAttention(nn.Module):
    """§3.2.2: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The h projections W_i^Q (and W_i^K, W_i^V) are one `d_model x d_model` matrix, split into heads by a reshape.
    Self-attention computes Q, K and V with one fused matrix (`qkv_proj`, rows [W^Q; W^K; W^V]); encoder-decoder
    attention projects queries from the decoder (`q_proj`) and keys and values from the encoder output once per
    sentence (`kv_proj`, rows [W^K; W^V]), kept in the cache during generation. The attention math itself is
    dispatched through transformers' attention interface (`config._attn_implementation`: "sdpa", "eager",
    "flash_attention_2", "flex_attention"), with `scaled_dot_product_attention` above as the eager version.
    """

    def __init__(
        self,
        config: VaswaniTransformerConfig,
        num_heads: int,
        is_cross_attention: bool = False,
        is_causal: bool = False,
        layer_idx: int | None = None,
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.d_model // num_heads
        self.scaling = self.head_dim**-0.5  # 1 / sqrt(d_k), Eq. 1
        self.dropout = config.attention_dropout
        self.is_cross_attention = is_cross_attention
        self.is_causal = is_causal  # read by the sdpa/flash backends: False for encoder and cross-attention
        self.layer_idx = layer_idx
        if is_cross_attention:
            self.q_proj = nn.Linear(config.d_model, config.d_model)
            self.kv_proj = nn.Linear(config.d_model, 2 * config.d_model)
            self.kv_proj.fused_projections = 2  # read by _init_weights: two d_model x d_model blocks
        else:
            self.qkv_proj = nn.Linear(config.d_model, 3 * config.d_model)
            self.qkv_proj.fused_projections = 3
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def split_heads(self, states: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """`(batch, len, parts * d_model)` -> `parts` tensors of `(batch, heads, len, head_dim)`."""
        batch, length, _ = states.shape
        states = states.view(batch, length, parts, self.num_heads, self.head_dim)  # (batch, len, parts, heads, hd)
        return states.permute(2, 0, 3, 1, 4).unbind(0)  # parts x (batch, heads, len, head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(batch, tgt_len, d_model)` queries (and keys/values for self-attention).
            key_value_states: `(batch, src_len, d_model)` encoder output, for encoder-decoder attention only; or
                `(batch / beams, src_len, d_model)`, one row per sentence whose `beams` hypotheses are adjacent rows
                of `hidden_states` (beam search, see `shared_encoder_output_beams`).
            attention_mask: mask from `transformers.masking_utils` for the chosen implementation, or None.
            past_key_values: `EncoderDecoderCache` while decoding incrementally, else None.
        Returns:
            `(batch, tgt_len, d_model)` output and the `(batch, heads, tgt_len, src_len)` weights (eager only).
        Raises:
            ValueError: from `shared_encoder_output_beams`, if the encoder rows do not divide the decoder rows.
        """
        batch, tgt_len, d_model = hidden_states.shape
        beams = 1  # hypotheses per source sentence sharing one encoder output (beam search, see below)
        if self.is_cross_attention:
            sentences = key_value_states.shape[0]
            if sentences != batch:
                beams = shared_encoder_output_beams(batch, sentences, self.config._attn_implementation)
            # Beams of one sentence attend to the same keys and values: fold them into the query length,
            # (batch * beams, tgt_len, d) -> (batch, beams * tgt_len, d), a view (rows of a sentence are adjacent).
            queries = self.q_proj(hidden_states).view(sentences, beams * tgt_len, d_model)
            (query,) = self.split_heads(queries, 1)  # (sentences, heads, beams * tgt_len, head_dim)
            cache = past_key_values.cross_attention_cache if past_key_values is not None else None
            if cache is not None and past_key_values.is_updated.get(self.layer_idx):
                key, value = cache.layers[self.layer_idx].keys, cache.layers[self.layer_idx].values
            else:
                key, value = self.split_heads(self.kv_proj(key_value_states), 2)  # (sentences, heads, src_len, hd)
                if cache is not None:
                    key, value = cache.update(key, value, self.layer_idx)
                    past_key_values.is_updated[self.layer_idx] = True
        else:
            query, key, value = self.split_heads(self.qkv_proj(hidden_states), 3)  # (batch, heads, len, head_dim)
            if past_key_values is not None:
                cache = past_key_values
                if isinstance(past_key_values, EncoderDecoderCache):
                    cache = past_key_values.self_attention_cache
                key, value = cache.update(key, value, self.layer_idx)  # (batch, heads, past + tgt_len, head_dim)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # output: (batch, tgt_len, heads, head_dim), or (sentences, beams * tgt_len, heads, head_dim) when folded
        output = self.out_proj(output.reshape(batch, tgt_len, d_model))  # Concat(head_1..head_h) W^O
        if beams > 1 and weights is not None:  # (sentences, heads, beams * tgt_len, src) -> (batch, heads, tgt, src)
            weights = weights.unflatten(2, (beams, tgt_len)).transpose(1, 2)
            weights = weights.reshape(batch, -1, tgt_len, weights.shape[-1])
        return output, weights


# §3.3 Position-wise feed-forward networks ----------------------------------------------------------------------


class VaswaniTransformerFeedForward(nn.Module):
    """§3.3, Eq. 2: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position separately and identically."""

    def __init__(self, config: VaswaniTransformerConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)  # W_1, b_1
        self.fc2 = nn.Linear(ffn_dim, config.d_model)  # W_2, b_2
        self.activation_fn = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, len, d_model)` -> `(batch, len, d_model)`."""
        hidden_states = self.activation_fn(self.fc1(hidden_states))  # (batch, len, d_ff)
        hidden_states = dropout(hidden_states, self.activation_dropout, self.training)
        return self.fc2(hidden_states)


# §3.1 Encoder and decoder layers --------------------------------------------------------------------------------


class VaswaniTransformerLayer(GradientCheckpointingLayer):
    """§3.1: what encoder and decoder layers share, the wrapping of each sub-layer:
    LayerNorm(x + Dropout(Sublayer(x))) (post-norm, the paper; dropout §5.4), or x + Dropout(Sublayer(LayerNorm(x)))
    with `layer_norm_position="pre"`. A sub-layer reads `sublayer_input(x, norm)`; `add_and_norm` closes it."""

    def __init__(self, config: VaswaniTransformerConfig):
        super().__init__()
        self.dropout = config.dropout  # P_drop on each sub-layer output (§5.4)
        # Deviation from the paper (opt-in): pre-norm, as tensor2tensor's and fairseq's `normalize_before`.
        self.normalize_before = config.layer_norm_position == "pre"

    def sublayer_input(self, hidden_states: torch.Tensor, layer_norm: nn.LayerNorm) -> torch.Tensor:
        """What the sub-layer reads: x (post-norm) or LayerNorm(x) (pre-norm). Shapes unchanged."""
        return layer_norm(hidden_states) if self.normalize_before else hidden_states

    def add_and_norm(self, residual: torch.Tensor, output: torch.Tensor, layer_norm: nn.LayerNorm) -> torch.Tensor:
        """x + Dropout(Sublayer(x)), then LayerNorm of that sum unless pre-norm. Shapes unchanged."""
        hidden_states = residual + dropout(output, self.dropout, self.training)
        return hidden_states if self.normalize_before else layer_norm(hidden_states)


class VaswaniTransformerEncoderLayer(VaswaniTransformerLayer):
    """§3.1: one encoder layer, multi-head self-attention then a position-wise feed-forward network."""

    def __init__(self, config: VaswaniTransformerConfig, layer_idx: int | None = None):
        super().__init__(config)
        self.self_attn = VaswaniTransformerAttention(config, config.encoder_attention_heads, layer_idx=layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = VaswaniTransformerFeedForward(config, config.encoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        """`(batch, src_len, d_model)` -> `(batch, src_len, d_model)`."""
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            self.sublayer_input(hidden_states, self.self_attn_layer_norm), attention_mask=attention_mask, **kwargs
        )
        residual = self.add_and_norm(residual, hidden_states, self.self_attn_layer_norm)
        hidden_states = self.ffn(self.sublayer_input(residual, self.final_layer_norm))  # (batch, src_len, d_model)
        return self.add_and_norm(residual, hidden_states, self.final_layer_norm)


class VaswaniTransformerDecoderLayer(VaswaniTransformerLayer):
    """§3.1: one decoder layer: masked self-attention, encoder-decoder attention, feed-forward; each sub-layer
    wrapped as in `VaswaniTransformerLayer`."""

    def __init__(self, config: VaswaniTransformerConfig, layer_idx: int | None = None):
        super().__init__(config)
        self.self_attn = VaswaniTransformerAttention(
            config, config.decoder_attention_heads, is_causal=True, layer_idx=layer_idx
        )
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.encoder_attn = VaswaniTransformerAttention(
            config, config.decoder_attention_heads, is_cross_attention=True, layer_idx=layer_idx
        )
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = VaswaniTransformerFeedForward(config, config.decoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        """`(batch, tgt_len, d_model)`, encoder output `(batch, src_len, d_model)` -> `(batch, tgt_len, d_model)`."""
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            self.sublayer_input(hidden_states, self.self_attn_layer_norm),
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            **kwargs,
        )
        residual = self.add_and_norm(residual, hidden_states, self.self_attn_layer_norm)
        hidden_states, _ = self.encoder_attn(
            self.sublayer_input(residual, self.encoder_attn_layer_norm),
            key_value_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            **kwargs,
        )
        residual = self.add_and_norm(residual, hidden_states, self.encoder_attn_layer_norm)
        hidden_states = self.ffn(self.sublayer_input(residual, self.final_layer_norm))  # (batch, tgt_len, d_model)
        return self.add_and_norm(residual, hidden_states, self.final_layer_norm)


# Pre-trained model base, stacks, embeddings ---------------------------------------------------------------------


class VaswaniTransformerPreTrainedModel(PreTrainedModel):
    """Weight initialisation and capabilities shared by the models below.

    Initialisation (not specified by the paper; as tensor2tensor and fairseq): Xavier-uniform for every projection
    (each d_model x d_model block of the fused projections gets its own Xavier bound) or N(0, `init_std`) if set;
    zero biases; embeddings N(0, d_model^-0.5), so that embeddings scaled by sqrt(d_model) have unit variance; the
    padding row zero.
    """

    config: VaswaniTransformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VaswaniTransformerEncoderLayer", "VaswaniTransformerDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with an error that names the weights file when it cannot be read.

        Raises:
            OSError: if a safetensors weights file is truncated or corrupt (safetensors' own error names no file):
                names the file (or the model id) and the cause. Other errors pass through unchanged.
        """
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as error:
            # safetensors.SafetensorError, matched by name: these files import only torch and transformers.
            if type(error).__name__ != "SafetensorError":
                raise
            local = os.path.join(str(pretrained_model_name_or_path), "model.safetensors")
            where = local if os.path.isfile(local) else f"the weights of {pretrained_model_name_or_path}"
            raise OSError(
                f"{where}: cannot be read ({error}); the file is truncated or corrupt: save or download it again"
            ) from error

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        if isinstance(module, nn.Linear):
            if self.config.init_std is not None:
                init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            else:
                # Xavier-uniform; a fused [W^Q; W^K; W^V] gets the bound of each of its d_model x d_model blocks.
                fan_out = module.out_features // getattr(module, "fused_projections", 1)
                bound = math.sqrt(6.0 / (module.in_features + fan_out))
                init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.d_model**-0.5)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VaswaniTransformerPositionalEncoding):
            init.copy_(module.table, module.compute_table(module.table.shape[0]))


class VaswaniTransformerStack(VaswaniTransformerPreTrainedModel):
    """§3.1, §3.4, §3.5: what both stacks share: token embeddings scaled by sqrt(d_model), plus positional
    encodings, with dropout (§5.4), feeding N identical layers; pre-norm stacks end with a LayerNorm."""

    layer_class: type[GradientCheckpointingLayer]

    def __init__(self, config: VaswaniTransformerConfig, num_layers: int):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0  # §3.4
        self.embed_positions = VaswaniTransformerPositionalEncoding(config)
        self.layers = nn.ModuleList([self.layer_class(config, layer_idx=i) for i in range(num_layers)])
        # Post-norm layers already end normalised; pre-norm stacks need a final LayerNorm (fairseq, tensor2tensor).
        self.layer_norm = None
        if config.layer_norm_position == "pre":
            self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.post_init()

    def embed(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, past_length: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(inputs_embeds, Dropout(inputs_embeds + PE))`, both `(batch, len, d_model)`.

        Raises:
            ValueError: if neither or both of `input_ids` and `inputs_embeds` are given.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"Pass exactly one of input_ids and inputs_embeds to {type(self).__name__}.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids) * self.embed_scale  # (batch, len, d_model)
        positions = self.embed_positions(inputs_embeds.shape[1], past_length).to(inputs_embeds.dtype)  # (len, d)
        return inputs_embeds, dropout(inputs_embeds + positions, self.config.dropout, self.training)

    def final_norm(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states if self.layer_norm is None else self.layer_norm(hidden_states)


class VaswaniTransformerEncoder(VaswaniTransformerStack):
    """§3.1: the encoder stack, N identical layers over scaled token embeddings plus positional encodings."""

    layer_class = VaswaniTransformerEncoderLayer
    _can_record_outputs = {
        "hidden_states": VaswaniTransformerEncoderLayer,
        "attentions": VaswaniTransformerAttention,
    }

    def __init__(self, config: VaswaniTransformerConfig):
        super().__init__(config, config.encoder_layers)

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        """
        Args:
            input_ids: `(batch, src_len)` source token ids.
            attention_mask: `(batch, src_len)`, 1 for tokens and 0 for padding.
            inputs_embeds: `(batch, src_len, d_model)` instead of `input_ids` (used as given, not scaled).
        Returns:
            `BaseModelOutput` with `last_hidden_state` `(batch, src_len, d_model)`.
        Raises:
            ValueError: if neither or both of `input_ids` and `inputs_embeds` are given.
        """
        inputs_embeds, hidden_states = self.embed(input_ids, inputs_embeds)  # (batch, src_len, d_model)
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=self.final_norm(hidden_states))


class VaswaniTransformerDecoder(VaswaniTransformerStack):
    """§3.1: the decoder stack; its self-attention is masked so position i sees only positions <= i (§3.2.3)."""

    layer_class = VaswaniTransformerDecoderLayer
    _can_record_outputs = {
        "hidden_states": VaswaniTransformerDecoderLayer,
        "attentions": OutputRecorder(VaswaniTransformerAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(VaswaniTransformerAttention, index=1, layer_name="encoder_attn"),
    }

    def __init__(self, config: VaswaniTransformerConfig):
        super().__init__(config, config.decoder_layers)

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """
        Args:
            input_ids: `(batch, tgt_len)` decoder input ids (the targets shifted right).
            attention_mask: `(batch, past + tgt_len)` decoder padding mask, or None.
            encoder_hidden_states: `(batch, src_len, d_model)` encoder output, or `(batch / beams, src_len, d_model)`
                with one row per sentence whose `beams` hypotheses are adjacent decoder rows (what `generate` passes
                for beam search; "sdpa" and "eager" attention only).
            encoder_attention_mask: `(batch, src_len)` (or `(batch / beams, src_len)`) source padding mask, or None.
            cache: `EncoderDecoderCache` of earlier steps; created when `use_cache` and None.
            inputs_embeds: `(batch, tgt_len, d_model)` instead of `input_ids` (used as given, not scaled).
            past_key_values: `cache` under its name before transformers 5.25.
        Returns:
            `BaseModelOutputWithPastAndCrossAttentions` with `last_hidden_state` `(batch, tgt_len, d_model)` and the
            cache (field `OUTPUT_CACHE_FIELD`).
        Raises:
            ValueError: if neither or both of `input_ids` and `inputs_embeds` are given, if the decoder batch is
                not a multiple of the encoder batch, or if both `cache` and `past_key_values` are given.
        """
        cache = decoder_cache(cache, past_key_values)
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        past_length = cache.get_seq_length() if cache is not None else 0
        inputs_embeds, hidden_states = self.embed(input_ids, inputs_embeds, past_length)  # (batch, tgt_len, d)

        self_attention_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            **{MASK_CACHE_ARGUMENT: self_attention_cache},
        )
        queries = inputs_embeds  # (batch, tgt_len, d): the queries of encoder-decoder attention, for the mask's shape
        batch, tgt_len, d_model = inputs_embeds.shape
        if encoder_hidden_states is not None and encoder_hidden_states.shape[0] != batch:
            # One encoder row per sentence, `beams` decoder rows each: attention folds them into the query length.
            sentences = encoder_hidden_states.shape[0]
            beams = shared_encoder_output_beams(batch, sentences, self.config._attn_implementation)
            queries = inputs_embeds.reshape(sentences, beams * tgt_len, d_model)
        encoder_attention_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=queries,
            attention_mask=encoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
        )
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                causal_mask,
                encoder_hidden_states,  # positional, for gradient checkpointing
                encoder_attention_mask=encoder_attention_mask,
                past_key_values=cache,
                **kwargs,
            )
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=self.final_norm(hidden_states), **{OUTPUT_CACHE_FIELD: cache}
        )


class VaswaniTransformerModel(VaswaniTransformerPreTrainedModel):
    """§3: the bare encoder-decoder.

    With `config.tie_word_embeddings` (the paper, §3.4), source and target embeddings are one matrix, stored once
    as `encoder.embed_tokens.weight`; otherwise they are two.
    """

    _tied_weights_keys = {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight"}

    def __init__(self, config: VaswaniTransformerConfig):
        super().__init__(config)
        self.encoder = VaswaniTransformerEncoder(config)
        self.decoder = VaswaniTransformerDecoder(config)
        if config.tie_word_embeddings:
            # One module, not two modules holding one tensor: FSDP2 (`fully_shard`) groups a shared tensor by
            # module, and rejects a tensor owned by two modules in different groups. State-dict keys are unchanged.
            self.decoder.embed_tokens = self.encoder.embed_tokens
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.encoder.embed_tokens = value
        if self.config.tie_word_embeddings:
            self.decoder.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple[torch.Tensor] | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqModelOutput:
        """Encode `(batch, src_len)` source ids once (or take `encoder_outputs`) and decode `(batch, tgt_len)` ids.

        `cache` is the decoder's `EncoderDecoderCache` (`past_key_values` before transformers 5.25).

        Returns:
            `Seq2SeqModelOutput`: `last_hidden_state` `(batch, tgt_len, d_model)`, `encoder_last_hidden_state`
            `(batch, src_len, d_model)`, the cache (field `OUTPUT_CACHE_FIELD`), and per-layer attentions if
            requested.
        Raises:
            ValueError: as `VaswaniTransformerDecoder.forward`.
        """
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
                attentions=encoder_outputs[2] if len(encoder_outputs) > 2 else None,
            )
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=decoder_cache(cache, past_key_values),
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            **{OUTPUT_CACHE_FIELD: getattr(decoder_outputs, OUTPUT_CACHE_FIELD)},
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


# §5.4 Label smoothing ---------------------------------------------------------------------------------------------


# Elements (rows x vocabulary) of one fp32 block of the loss on CPU: 4 MiB, which stays in the L2/L3 cache and is
# served again from the allocator's heap. A whole `(N, V)` fp32 temporary (65 MB for 2,040 target tokens x 8,000)
# is above glibc's mmap threshold, so every step maps and page-faults fresh memory for it and streams it through
# DRAM: on the Multi30k CPU preset the loss took a third of a bf16 step; in blocks it is 5.9x faster (measured).
_CPU_LOSS_BLOCK_ELEMENTS = 1 << 20


def _loss_block_rows(logits: torch.Tensor, block_rows: int | None) -> int:
    """Rows per block: `block_rows`, else ~1M elements on CPU and every row at once elsewhere (on a GPU one kernel
    over the whole tensor is fastest and a Python loop of blocks would be launch-bound)."""
    if block_rows is not None:
        return max(1, block_rows)
    rows = logits.shape[0]
    if logits.device.type == "cpu":
        return max(1, min(rows, _CPU_LOSS_BLOCK_ELEMENTS // max(1, logits.shape[-1])))
    return max(1, rows)


class _LabelSmoothedCrossEntropy(torch.autograd.Function):
    """Label-smoothed cross-entropy whose gradient is computed in the forward pass, block by block.

    `F.cross_entropy(logits, labels, label_smoothing=eps)` saves the `(N, V)` log-probabilities for backward and
    builds two more `(N, V)` tensors there (the gradient of the loss with respect to the log-probabilities, then the
    one with respect to the logits). Here each block of `block_rows` rows (`_loss_block_rows`) gives, while it is in
    the cache, both its loss terms (log Z = logsumexp(z) and mean_k z_k, in fp32) and its gradient
    (softmax(z) - q) / n, written in the logits' own dtype. Only that gradient is saved (not the logits: they may be
    freed once the caller drops them), and backward scales it by the incoming gradient (nothing to do for the usual
    1.0 on CPU). Without `needs_grad` (no_grad, evaluation) the gradient is not computed. Not twice differentiable.
    """

    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        labels: torch.Tensor,
        epsilon: float,
        ignore_index: int,
        block_rows: int,
        needs_grad: bool,
    ) -> torch.Tensor:
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)  # fp32 (fp64 for fp64 logits)
        rows, vocab_size = logits.shape
        valid = labels != ignore_index  # (N,)
        targets = labels.masked_fill(~valid, 0).unsqueeze(1)  # (N, 1), any in-range id where ignored
        count = valid.sum()
        scale = torch.where(valid, 1.0 / count, 0.0)  # (N,): d loss / d per_token; 0 where ignored
        log_z = logits.new_empty(rows, dtype=compute_dtype)  # (N,) logsumexp(z)
        mean_logit = logits.new_empty(rows, dtype=compute_dtype)  # (N,) mean_k z_k
        grad = torch.empty_like(logits) if needs_grad else None  # (N, V) in the logits' dtype
        for start in range(0, rows, block_rows):
            end = start + block_rows
            block = logits[start:end].to(compute_dtype)  # (rows, V); the same tensor if fp32
            torch.logsumexp(block, dim=-1, out=log_z[start:end])
            torch.mean(block, dim=-1, out=mean_logit[start:end])
            if grad is None:
                continue
            # z - log Z in fp32 (fp64 for fp64 logits), while the block is in the cache; in place on a converted copy
            if logits.dtype == compute_dtype:
                block = torch.sub(block, log_z[start:end].unsqueeze(1))  # (rows, V)
            else:
                block.sub_(log_z[start:end].unsqueeze(1))
            block.exp_().sub_(epsilon / vocab_size)  # softmax(z) - eps / V
            block.scatter_add_(1, targets[start:end], block.new_full((block.shape[0], 1), epsilon - 1.0))
            grad[start:end] = block.mul_(scale[start:end].unsqueeze(1))  # - (1 - eps) at the target
        target_logit = logits.gather(1, targets).squeeze(1).to(compute_dtype)  # (N,)
        # -sum_k q(k) log p(k) = (1 - eps) (log Z - z_y) + eps (log Z - mean_k z_k)
        per_token = log_z - (1.0 - epsilon) * target_logit - epsilon * mean_logit  # (N,)
        if grad is not None:
            ctx.save_for_backward(grad)
        return torch.where(valid, per_token, 0.0).sum() / count  # 0 / 0 = nan when all ignored, as F.cross_entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors  # (N, V): d loss / d logits, never modified (backward may run again)
        if grad_output.device.type != "cpu" or grad_output.item() != 1.0:  # no host sync on accelerators
            grad = grad * grad_output  # a 0-dim fp32 factor: the product is taken in fp32, stored in grad's dtype
        return grad, None, None, None, None, None


def label_smoothed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float, ignore_index: int = -100, block_rows: int | None = None
) -> torch.Tensor:
    """§5.4 (after Szegedy et al., 2016): cross-entropy against q(k) = (1 - eps) * [k = y] + eps / V.

    Equals (1 - eps) * NLL(y) + eps * mean_k(-log p(k)) = log Z - (1 - eps) z_y - eps mean_k z_k, with z the
    logits and log Z their logsumexp; its gradient with respect to z is softmax(z) - q. Same value and gradient
    as `torch.nn.functional.cross_entropy(..., label_smoothing=eps)` (tested to fp32 rounding), computed in fp32
    from logits of any dtype, but without `(N, V)` fp32 temporaries: each block gives its loss terms and its
    gradient in one visit, in the forward pass (`_LabelSmoothedCrossEntropy`; the gradient is skipped under
    `torch.no_grad` or for logits without grad).

    Args:
        logits: `(batch, tgt_len, vocab)`; labels: `(batch, tgt_len)` with `ignore_index` at ignored positions.
        epsilon: eps_ls, 0.1 in the paper.
        block_rows: target positions per block of fp32 arithmetic; None: ~1M elements a block on CPU, all rows at
            once on other devices (`_loss_block_rows`). Blocks change the speed, not the result.
    Returns:
        scalar fp32: the mean over non-ignored target tokens (nats per token); nan if every position is ignored.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (batch * tgt_len, vocab)
    return _LabelSmoothedCrossEntropy.apply(
        flat_logits,
        labels.reshape(-1),  # (batch * tgt_len,)
        float(epsilon),
        ignore_index,
        _loss_block_rows(flat_logits, block_rows),
        torch.is_grad_enabled() and flat_logits.requires_grad,
    )


class VaswaniTransformerForConditionalGeneration(VaswaniTransformerPreTrainedModel, GenerationMixin):
    """§3.4: the encoder-decoder and the pre-softmax linear transformation, which with `config.tie_word_embeddings`
    (the paper) is the same matrix as the source and target embeddings.

    Given `labels`, returns the label-smoothed cross-entropy (`config.label_smoothing`, §5.4) and, if no decoder
    inputs are given, builds `decoder_input_ids` by shifting the labels right with `decoder_start_token_id`.
    Works with `generate()` (greedy, beam search, sampling) and an `EncoderDecoderCache`.
    """

    _tied_weights_keys = {"lm_head.weight": "model.encoder.embed_tokens.weight"}

    def __init__(self, config: VaswaniTransformerConfig):
        super().__init__(config)
        self.model = VaswaniTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # softmax weights (§3.4)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple[torch.Tensor] | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqLMOutput:
        """
        Args:
            input_ids, attention_mask: `(batch, src_len)` source ids and padding mask.
            decoder_input_ids, decoder_attention_mask: `(batch, tgt_len)`; built from `labels` when omitted.
            cache: the decoder's `EncoderDecoderCache` while generating (`past_key_values` before transformers 5.25).
            labels: `(batch, tgt_len)` target ids, -100 where no loss is wanted.
        Returns:
            `Seq2SeqLMOutput` with `logits` `(batch, tgt_len, vocab_size)`, the cache (field `OUTPUT_CACHE_FIELD`)
            and, given labels, the scalar `loss`.
        Raises:
            ValueError: as `VaswaniTransformerDecoder.forward`.
        """
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
        outputs: Seq2SeqModelOutput = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=decoder_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (batch, tgt_len, vocab_size)
        loss = None
        if labels is not None:
            loss = label_smoothed_cross_entropy(logits, labels, self.config.label_smoothing)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **{OUTPUT_CACHE_FIELD: getattr(outputs, OUTPUT_CACHE_FIELD)},
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, also recording the translation pipeline in `config.custom_pipelines`
        and, for remote code, the bare encoder-decoder under `AutoModel` in `config.auto_map`.

        transformers copies the files this module imports (relatively, even inside a function) next to the weights,
        so `pipeline("translation", model=save_directory, trust_remote_code=True)` works on transformers 5.x, whose
        built-in "translation" task is gone. Imported here, not at the top, so that loading a model does not import
        transformers' pipelines. transformers itself records only the saved class (`AutoModelForSeq2SeqLM`); the
        `AutoModel` entry lets `AutoModel.from_pretrained(save_directory, trust_remote_code=True)` load
        `VaswaniTransformerModel` from the same weights (its parameters are this model's `model.*`).
        """
        from .pipeline_translation import translation_custom_pipelines

        self.config.custom_pipelines = translation_custom_pipelines()
        if self._auto_class is not None:  # registered for remote code (`vaswani_transformer/__init__.py`)
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.VaswaniTransformerModel",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.LongTensor | None, dict]:
        """`GenerationMixin._expand_inputs_for_generation`, but the encoder output and its padding mask stay at one
        row per sentence; the decoder inputs are repeated `expand_size` times (beams, or `num_return_sequences`).

        Encoder-decoder attention then computes W^K and W^V of each sentence once, keeps one copy in the cache, and
        attends from all beams of a sentence at once (`shared_encoder_output_beams`). With an attention
        implementation other than "sdpa" or "eager", everything is repeated, as in transformers. Overrides a private
        method: `tests/model/test_contracts.py` checks it against the installed transformers.

        Returns:
            `(input_ids, model_kwargs)`: `(batch * expand_size, len)` decoder ids and the generation kwargs.
        """
        if (
            expand_size == 1
            or not is_encoder_decoder
            or self.config._attn_implementation not in SHARED_ENCODER_OUTPUT_IMPLEMENTATIONS
        ):
            return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **kwargs)
        if kwargs.get("encoder_outputs") is None:
            raise ValueError("If `is_encoder_decoder` is True, make sure that `encoder_outputs` is defined.")
        shared = {name: kwargs.pop(name) for name in ("encoder_outputs", "attention_mask") if name in kwargs}
        input_ids, kwargs = super()._expand_inputs_for_generation(expand_size, False, input_ids, **kwargs)
        return input_ids, {**kwargs, **shared}

    def _beam_search(
        self,
        input_ids: torch.LongTensor,
        logits_processor,
        stopping_criteria,
        generation_config,
        synced_gpus: bool = False,
        **model_kwargs,
    ):
        """`generate(num_beams > 1)`: `generation_vaswani_transformer.beam_search`, which makes transformers'
        choices with finished sentences leaving the batch, or `GenerationMixin._beam_search` where that cannot stand
        in (`unsupported_reason`: beam sampling, `return_dict_in_generate`, decoder prompts, ...). Overrides a
        private method: `tests/model/test_contracts.py` checks its signature against the installed transformers.

        Args:
            input_ids: `(batch * num_beams, 1)` decoder start tokens (longer with a decoder prompt).
        Returns:
            `(batch * num_return_sequences, out_len)` token ids, or transformers' `GenerateBeamEncoderDecoderOutput`
            when it runs the search.
        Raises:
            ValueError: `generation_config.length_penalty_type` is not "length"/"gnmt", or is "gnmt" (which
                transformers' loop does not know) on a call that only transformers' loop can run.
        """
        reason = unsupported_reason(
            self, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, model_kwargs
        )
        if reason is not None and length_penalty_type(generation_config) != "length":
            raise ValueError(
                f"length_penalty_type={generation_config.length_penalty_type!r} needs this model's beam search, "
                f"which cannot run this call ({reason}); use length_penalty_type='length' for it"
            )
        if reason is not None:
            return super()._beam_search(
                input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, **model_kwargs
            )
        return beam_search(self, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs)

    @staticmethod
    def _reorder_cache(past_key_values: Cache, beam_idx: torch.LongTensor) -> Cache:
        """Beam search: make row i of the self-attention cache that of beam `beam_idx[i]`; keep the cross-attention
        cache as it is. `GenerationMixin`'s beam search calls this hook, when a model defines it, instead of
        `EncoderDecoderCache.reorder_cache`, which would copy both (`tests/model/test_contracts.py`).

        The cross-attention keys and values are W^K and W^V applied to the encoder output (§3.2.3): one row per
        sentence (`_expand_inputs_for_generation`), or, with other attention implementations, one per beam, all
        equal within a sentence; beam search only ever moves a row to another beam of the same sentence. Copying
        them every step is therefore a no-op (or impossible, with one row per sentence).

        Args:
            past_key_values: the `EncoderDecoderCache` (or a self-attention-only `Cache`) of `(batch * beams, ...)`.
            beam_idx: `(batch * beams,)` source row of each row, always within the same sentence's beams.
        Returns:
            `past_key_values`, reordered in place.
        """
        cache = past_key_values
        if isinstance(cache, EncoderDecoderCache):
            cache = cache.self_attention_cache
        cache.reorder_cache(beam_idx)
        return past_key_values

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """`(batch, tgt_len)` labels -> decoder inputs, for `DataCollatorForSeq2Seq(model=...)`."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
