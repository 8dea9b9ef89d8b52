"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017, arXiv:1706.03762) for transformers.

The file follows §3 of the paper, in its order: positional encoding (§3.5), scaled dot-product attention (§3.2.1,
Eq. 1), multi-head attention (§3.2.2), position-wise feed-forward (§3.3, Eq. 2), encoder and decoder layers (§3.1),
the stacks, embeddings and softmax (§3.4), with the label-smoothed loss of §5.4. It imports only torch,
transformers and the standard library, so that it runs as remote code (`trust_remote_code=True`) where this
package is absent. Beam search lives in `generation_vaswani_transformer.py`, reached through `generate()`'s
`custom_generate` hook; training-only speed options live in the training library, never here.

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
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_vaswani_transformer import VaswaniTransformerConfig
from .decoding_vaswani_transformer import ScoreOutput
from .decoding_vaswani_transformer import score as score_sequences
from .generation_vaswani_transformer import decoding_loop_for


__all__ = [
    "VaswaniTransformerForConditionalGeneration",
    "VaswaniTransformerModel",
    "VaswaniTransformerPreTrainedModel",
    "scaled_dot_product_attention",
    "shift_tokens_right",
    "sinusoidal_positional_encoding",
]

# transformers 5.25 renamed the decoder cache from `past_key_values` to `cache`. A saved model runs as remote code
# on every release from 5.4 on, so the forwards take `cache` and accept the old name through transformers' own
# `deprecate_kwarg` (what `generate()` passes on 5.4 to 5.24), and the outputs and `create_causal_mask` use the
# installed release's name.
accept_old_cache_name = deprecate_kwarg("past_key_values", "6.0.0", new_name="cache", raise_if_both_names=True)
OUTPUT_CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"
MASK_CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """§3.1 "shifted right": `(batch, tgt_len)` labels `[y_1 .. y_n]` -> decoder inputs `[start, y_1 .. y_{n-1}]`,
    with ignored positions (-100) as `pad_token_id`."""
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
    elif layout == "concatenated":  # Deviation from the paper (opt-in): Marian's, fairseq's, tensor2tensor's order
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
        dropout: dropout probability on the attention weights (`attention_dropout`; 0 in the paper).
    Returns:
        `(batch, tgt_len, heads, head_dim)` attention output and `(batch, heads, tgt_len, src_len)` weights.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (batch, heads, tgt_len, src_len)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (batch, heads, tgt_len, head_dim)
    return output.transpose(1, 2).contiguous(), weights  # (batch, tgt_len, heads, head_dim)


# transformers' name for the eager function: 5.4 to 5.10 let `set_attn_implementation` switch a model only if its
# modeling file holds this name and `ALL_ATTENTION_FUNCTIONS.get_interface(`.
eager_attention_forward = scaled_dot_product_attention


# §3.2.2 Multi-head attention ------------------------------------------------------------------------------------


class VaswaniTransformerAttention(nn.Module):
    """§3.2.2: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The h projections W_i^Q (likewise K, V) are one `d_model x d_model` matrix split into heads by a reshape;
    self-attention fuses them (`qkv_proj`, rows [W^Q; W^K; W^V]), encoder-decoder attention projects queries from
    the decoder (`q_proj`) and keys and values from the encoder output (`kv_proj`, cached while generating). Eq. 1
    is dispatched through transformers' attention interface (`config._attn_implementation`), eager above.
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
        # Deviation from the paper (opt-in, 0 by default): dropout on the attention weights, tensor2tensor's.
        self.attention_dropout = config.attention_dropout
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
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `(batch, tgt_len, d_model)` queries (and keys/values for self-attention).
            key_value_states: `(batch, src_len, d_model)` encoder output, for encoder-decoder attention only; or
                `(batch / beams, src_len, d_model)`, one row per sentence whose `beams` hypotheses are adjacent rows
                of `hidden_states` (our beam search, `generation_vaswani_transformer.beam_search`).
            attention_mask: mask from `transformers.masking_utils` for the chosen implementation, or None.
            cache: `EncoderDecoderCache` while decoding incrementally, else None.
        Returns:
            `(batch, tgt_len, d_model)` output and the `(batch, heads, tgt_len, src_len)` weights (eager only).
        Raises:
            ValueError: if the encoder rows do not divide the decoder rows.
        """
        batch, tgt_len, d_model = hidden_states.shape
        beams = 1  # hypotheses per source sentence sharing one encoder output (beam search, see below)
        if self.is_cross_attention:
            sentences = key_value_states.shape[0]
            if batch % sentences:
                raise ValueError(f"decoder batch {batch} is not a multiple of the encoder batch {sentences}")
            beams = batch // sentences
            # Beams of one sentence attend to the same keys and values: fold them into the query length,
            # (batch * beams, tgt_len, d) -> (batch, beams * tgt_len, d), a view (rows of a sentence are adjacent).
            queries = self.q_proj(hidden_states).view(sentences, beams * tgt_len, d_model)
            (query,) = self.split_heads(queries, 1)  # (sentences, heads, beams * tgt_len, head_dim)
            cross_cache = cache.cross_attention_cache if cache is not None else None
            if cross_cache is not None and cache.is_updated.get(self.layer_idx):
                key, value = cross_cache.layers[self.layer_idx].keys, cross_cache.layers[self.layer_idx].values
            else:
                key, value = self.split_heads(self.kv_proj(key_value_states), 2)  # (sentences, heads, src_len, hd)
                if cross_cache is not None:
                    key, value = cross_cache.update(key, value, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            query, key, value = self.split_heads(self.qkv_proj(hidden_states), 3)  # (batch, heads, len, head_dim)
            if cache is not None:
                self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
                key, value = self_cache.update(key, value, self.layer_idx)  # (batch, heads, past + tgt_len, hd)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # output: (batch, tgt_len, heads, head_dim), or (sentences, beams * tgt_len, heads, head_dim) when folded
        output = self.out_proj(output.reshape(batch, tgt_len, d_model))  # Concat(head_1..head_h) W^O
        return output, weights  # weights: (batch, heads, tgt_len, src_len); by sentence when folded


# §3.3 Position-wise feed-forward networks ----------------------------------------------------------------------


class VaswaniTransformerFeedForward(nn.Module):
    """§3.3, Eq. 2: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position separately and identically."""

    def __init__(self, config: VaswaniTransformerConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)  # W_1, b_1
        self.fc2 = nn.Linear(ffn_dim, config.d_model)  # W_2, b_2
        self.activation_fn = ACT2FN[config.activation_function]
        # Deviation from the paper (opt-in, 0 by default): dropout after the ReLU, tensor2tensor's relu_dropout.
        self.activation_dropout = nn.Dropout(config.activation_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, len, d_model)` -> `(batch, len, d_model)`."""
        hidden_states = self.activation_fn(self.fc1(hidden_states))  # (batch, len, d_ff)
        hidden_states = self.activation_dropout(hidden_states)
        return self.fc2(hidden_states)


# §3.1 Encoder and decoder layers --------------------------------------------------------------------------------


class VaswaniTransformerLayer(GradientCheckpointingLayer):
    """§3.1: what encoder and decoder layers share, the wrapping of each sub-layer:
    LayerNorm(x + Dropout(Sublayer(x))) (post-norm, the paper; dropout §5.4), or x + Dropout(Sublayer(LayerNorm(x)))
    with `layer_norm_position="pre"`. A sub-layer reads `sublayer_input(x, norm)`; `add_and_norm` closes it."""

    def __init__(self, config: VaswaniTransformerConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)  # P_drop on each sub-layer output (§5.4)
        # Deviation from the paper (which states none): LayerNorm epsilon `config.layer_norm_eps`, 1e-5 as fairseq.
        # Deviation from the paper (opt-in): pre-norm, as tensor2tensor's and fairseq's `normalize_before`.
        self.normalize_before = config.layer_norm_position == "pre"

    def sublayer_input(self, hidden_states: torch.Tensor, layer_norm: nn.LayerNorm) -> torch.Tensor:
        """What the sub-layer reads: x (post-norm) or LayerNorm(x) (pre-norm). Shapes unchanged."""
        return layer_norm(hidden_states) if self.normalize_before else hidden_states

    def add_and_norm(self, residual: torch.Tensor, output: torch.Tensor, layer_norm: nn.LayerNorm) -> torch.Tensor:
        """x + Dropout(Sublayer(x)), then LayerNorm of that sum unless pre-norm. Shapes unchanged."""
        hidden_states = residual + self.dropout(output)
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
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        """`(batch, tgt_len, d_model)`, encoder output `(batch, src_len, d_model)` -> `(batch, tgt_len, d_model)`."""
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            self.sublayer_input(hidden_states, self.self_attn_layer_norm),
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        residual = self.add_and_norm(residual, hidden_states, self.self_attn_layer_norm)
        hidden_states, _ = self.encoder_attn(
            self.sublayer_input(residual, self.encoder_attn_layer_norm),
            key_value_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
            cache=cache,
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
        """`PreTrainedModel.from_pretrained`; raises OSError naming the weights file if it is truncated or corrupt
        (safetensors' own error names no file). Other errors pass through unchanged."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as error:
            # safetensors.SafetensorError, matched by name: these files import only torch and transformers.
            if type(error).__name__ != "SafetensorError":
                raise
            local = os.path.join(str(pretrained_model_name_or_path), "model.safetensors")
            where = local if os.path.isfile(local) else f"the weights of {pretrained_model_name_or_path}"
            raise OSError(
                f"{where}: cannot be read ({error}); truncated or corrupt: save or download it again"
            ) from error

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # Deviation from the paper (which states none): tensor2tensor's and fairseq's initialisation, see the class.
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
        self.dropout = nn.Dropout(config.dropout)  # P_drop on the sums of embeddings and positional encodings (§5.4)
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
        return inputs_embeds, self.dropout(inputs_embeds + positions)

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
    @accept_old_cache_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """
        Args:
            input_ids: `(batch, tgt_len)` decoder input ids (the targets shifted right).
            attention_mask: `(batch, past + tgt_len)` decoder padding mask, or None.
            encoder_hidden_states: `(batch, src_len, d_model)` encoder output.
            encoder_attention_mask: `(batch, src_len)` source padding mask, or None.
            cache: `EncoderDecoderCache` of earlier steps; created when `use_cache` and None.
            inputs_embeds: `(batch, tgt_len, d_model)` instead of `input_ids` (used as given, not scaled).
        Returns:
            `BaseModelOutputWithPastAndCrossAttentions` with `last_hidden_state` `(batch, tgt_len, d_model)` and the
            cache (field `OUTPUT_CACHE_FIELD`).
        Raises:
            ValueError: if neither or both of `input_ids` and `inputs_embeds` are given, or both `cache` and
                `past_key_values`.
        """
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
        encoder_attention_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=encoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
        )
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                causal_mask,
                encoder_hidden_states,  # positional, for gradient checkpointing
                encoder_attention_mask=encoder_attention_mask,
                cache=cache,
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
    @accept_old_cache_name
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
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqModelOutput:
        """Encode `(batch, src_len)` source ids once (or take `encoder_outputs`) and decode `(batch, tgt_len)` ids.

        Returns `Seq2SeqModelOutput`: `last_hidden_state` `(batch, tgt_len, d_model)`, `encoder_last_hidden_state`
        `(batch, src_len, d_model)`, the cache. Raises ValueError as `VaswaniTransformerDecoder.forward`.
        """
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)  # (last_hidden_state, hidden_states, attentions)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=cache,
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
    @accept_old_cache_name
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
            cache=cache,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (batch, tgt_len, vocab_size)
        loss = None
        if labels is not None:  # §5.4 label smoothing, eps_ls = config.label_smoothing; -100 ignored
            flat_logits = logits.reshape(-1, logits.shape[-1]).float()  # (batch * tgt_len, vocab_size)
            loss = F.cross_entropy(flat_logits, labels.reshape(-1), label_smoothing=self.config.label_smoothing)
        fields = {name: value for name, value in outputs.items() if name != "last_hidden_state"}
        return Seq2SeqLMOutput(loss=loss, logits=logits, **fields)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, also recording the translation pipeline in `config.custom_pipelines`
        (transformers 5.x has no built-in "translation" task; the pipeline file is copied beside the weights, as
        every file this module imports relatively) and the bare encoder-decoder under `AutoModel` in `auto_map`."""
        # transformers 5.4 copies only the relative imports of the file it loads, yet reads all of them: the
        # pipeline's own import must also be this file's.
        from .batching_vaswani_transformer import length_sorted_batches  # noqa: F401
        from .pipeline_translation import translation_custom_pipelines

        self.config.custom_pipelines = translation_custom_pipelines()
        if self._auto_class is not None:  # registered for remote code (`vaswani_transformer/__init__.py`)
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.VaswaniTransformerModel",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def generate(self, *args, custom_generate=None, target_prefix=None, **kwargs):
        """`GenerationMixin.generate`; beam search runs `generation_vaswani_transformer.beam_search` as its decoding
        loop, through generate's `custom_generate` hook, and everything else transformers' own loops.

        transformers prepares the inputs, logits processors and stopping criteria as usual; a `custom_generate`
        given by the caller (a callable or a Hub repository) is used as given. Returns what `generate` returns.

        Args:
            target_prefix: forced first tokens per sentence, then a free search (CTranslate2's `target_prefix`):
                one list of target ids per sentence (an empty list forces nothing), without `</s>` or the decoder
                start token; they are part of the output and of its score. Any generation mode.
        Raises:
            ValueError: if `target_prefix` has not one entry per sentence, as `generate` otherwise.
        """
        if custom_generate is None:
            custom_generate = decoding_loop_for(self, args, kwargs, target_prefix)
        elif target_prefix is not None:
            raise ValueError("target_prefix works with this model's own decoding loops, not a custom_generate")
        return super().generate(*args, custom_generate=custom_generate, **kwargs)

    def score(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        generation_config=None,
        length_penalty: float | None = None,
    ) -> ScoreOutput:
        """Forced decoding: log p(y_t | y_<t, x) of given `(batch, tgt_len)` labels (-100 where padded) per token,
        and per sentence normalised as beam search's `sequences_scores` (sum / |y| ** length_penalty, from the
        generation config). `decoding_vaswani_transformer.score`, which gives shapes and errors."""
        return score_sequences(self, input_ids, labels, attention_mask, generation_config, length_penalty)

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """`(batch, tgt_len)` labels -> decoder inputs, for `DataCollatorForSeq2Seq(model=...)`."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
