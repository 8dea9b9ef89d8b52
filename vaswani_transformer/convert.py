"""Conversion between transformers' `MarianMTModel` (the Marian NMT Transformer) and this package's model.

Marian's transformer is the paper's architecture with a few options: post-norm layers, sinusoidal positional
encodings with sines and cosines concatenated ([sin | cos], `positional_encoding_layout="concatenated"`), embeddings
scaled by sqrt(d_model) and shared between source, target and the output projection. Both directions map the weights
one to one through one name table (`_weight_names`: our fused projections stack Marian's separate W^Q, W^K, W^V),
and each refuses what the other model cannot express: `from_marian` a logits bias, two vocabularies and LayerDrop;
`to_marian` pre-norm layers and a LayerNorm epsilon other than Marian's.

A converted model keeps Marian's tokenizer (`MarianTokenizer`: SentencePiece models for source and target over one
shared vocabulary, ids as the embeddings were trained with); `load_tokenizer` loads it, or ours, from a saved model.
"""

import copy

import torch
from transformers import AutoTokenizer, MarianConfig, MarianMTModel
from transformers.models.auto.tokenization_auto import get_tokenizer_config

from .configuration_vaswani_transformer import POSITIONAL_ENCODING_LAYOUTS, VaswaniTransformerConfig
from .modeling_vaswani_transformer import VaswaniTransformerForConditionalGeneration, sinusoidal_positional_encoding
from .tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast


__all__ = ["config_from_marian", "config_to_marian", "from_marian", "load_tokenizer", "to_marian"]

# Marian's LayerNorms are `nn.LayerNorm(d_model)`: PyTorch's default epsilon, not configurable.
MARIAN_LAYER_NORM_EPS = 1e-5
# The token embeddings and the output projection: the same names in both models.
EMBEDDING_NAMES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")


def config_from_marian(marian_config) -> VaswaniTransformerConfig:
    """The `VaswaniTransformerConfig` with the same architecture as a `MarianConfig`.

    The positional encoding layout is "concatenated", Marian's own; `from_marian` reads it from the model instead.

    Raises:
        ValueError: naming the Marian setting we cannot represent: a separate decoder vocabulary
            (`decoder_vocab_size` != `vocab_size` or `share_encoder_decoder_embeddings=False`), or LayerDrop.
    """
    if (marian_config.decoder_vocab_size or marian_config.vocab_size) != marian_config.vocab_size:
        raise ValueError(
            f"MarianConfig.decoder_vocab_size={marian_config.decoder_vocab_size} differs from vocab_size="
            f"{marian_config.vocab_size}; this model has one shared vocabulary (§3.4, §5.1)."
        )
    if not marian_config.share_encoder_decoder_embeddings:
        raise ValueError(
            "MarianConfig.share_encoder_decoder_embeddings=False: separate source and target vocabularies are not "
            "supported; this model has one shared vocabulary (§3.4, §5.1)."
        )
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        if getattr(marian_config, name):
            raise ValueError(f"MarianConfig.{name}={getattr(marian_config, name)}: LayerDrop is not supported.")
    return VaswaniTransformerConfig(
        vocab_size=marian_config.vocab_size,
        d_model=marian_config.d_model,
        encoder_layers=marian_config.encoder_layers,
        decoder_layers=marian_config.decoder_layers,
        encoder_attention_heads=marian_config.encoder_attention_heads,
        decoder_attention_heads=marian_config.decoder_attention_heads,
        encoder_ffn_dim=marian_config.encoder_ffn_dim,
        decoder_ffn_dim=marian_config.decoder_ffn_dim,
        dropout=marian_config.dropout,
        attention_dropout=marian_config.attention_dropout,
        activation_dropout=marian_config.activation_dropout,
        activation_function=marian_config.activation_function,
        max_position_embeddings=marian_config.max_position_embeddings,
        scale_embedding=marian_config.scale_embedding,
        tie_word_embeddings=marian_config.tie_word_embeddings,
        label_smoothing=0.0,  # Marian's loss is plain cross-entropy
        layer_norm_position="post",
        positional_encoding_layout="concatenated",
        pad_token_id=marian_config.pad_token_id,
        bos_token_id=marian_config.bos_token_id,
        eos_token_id=marian_config.eos_token_id,
        decoder_start_token_id=marian_config.decoder_start_token_id,
    )


def config_to_marian(config: VaswaniTransformerConfig) -> MarianConfig:
    """The `MarianConfig` with the same architecture as a `VaswaniTransformerConfig` (the inverse of
    `config_from_marian`): one vocabulary shared by source and target, no LayerDrop, no logits bias.

    Not carried: `label_smoothing` (Marian's `labels` loss is plain cross-entropy), `init_std` (initialisation only)
    and `positional_encoding_layout` (Marian builds [sin | cos] tables; `to_marian` copies ours into the model).

    Raises:
        ValueError: naming what Marian cannot represent: pre-norm layers (`layer_norm_position="pre"`; Marian's
            layers are post-norm and its stacks have no final LayerNorm), or `layer_norm_eps` != 1e-5.
    """
    if config.layer_norm_position != "post":
        raise ValueError(
            f"layer_norm_position={config.layer_norm_position!r}: MarianMTModel has post-norm layers only (§3.1)."
        )
    if config.layer_norm_eps != MARIAN_LAYER_NORM_EPS:
        raise ValueError(
            f"layer_norm_eps={config.layer_norm_eps}: MarianMTModel's LayerNorms use {MARIAN_LAYER_NORM_EPS}."
        )
    return MarianConfig(
        vocab_size=config.vocab_size,
        decoder_vocab_size=config.vocab_size,
        share_encoder_decoder_embeddings=True,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.encoder_attention_heads,
        decoder_attention_heads=config.decoder_attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        activation_function=config.activation_function,
        max_position_embeddings=config.max_position_embeddings,
        scale_embedding=config.scale_embedding,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        forced_eos_token_id=None,
    )


def _layer_weight_names(stack: str, index: int) -> dict[str, tuple[str, ...]]:
    """Our name of each weight of one layer -> the Marian weights it holds, stacked along dim 0 in that order.

    Self-attention: `qkv_proj` = [W^Q; W^K; W^V] (weight `(3 * d_model, d_model)`); encoder-decoder attention:
    `q_proj` = W^Q and `kv_proj` = [W^K; W^V] (`(2 * d_model, d_model)`); Marian's `fc1` and `fc2` sit under our
    `ffn.`; the output projections and LayerNorms keep Marian's names.
    """
    prefix = f"model.{stack}.layers.{index}"
    fused = {"self_attn.qkv_proj": ("self_attn", "qkv")}
    modules = ["self_attn.out_proj", "self_attn_layer_norm", "final_layer_norm"]
    if stack == "decoder":
        fused.update({"encoder_attn.q_proj": ("encoder_attn", "q"), "encoder_attn.kv_proj": ("encoder_attn", "kv")})
        modules += ["encoder_attn.out_proj", "encoder_attn_layer_norm"]
    names = {}
    for kind in ("weight", "bias"):
        for ours, (attention, parts) in fused.items():
            names[f"{prefix}.{ours}.{kind}"] = tuple(f"{prefix}.{attention}.{part}_proj.{kind}" for part in parts)
        for module in modules:
            names[f"{prefix}.{module}.{kind}"] = (f"{prefix}.{module}.{kind}",)
        for linear in ("fc1", "fc2"):
            names[f"{prefix}.ffn.{linear}.{kind}"] = (f"{prefix}.{linear}.{kind}",)
    return names


def _weight_names(config: VaswaniTransformerConfig) -> dict[str, tuple[str, ...]]:
    """Every weight of our model with `config`, by our name -> the Marian names it stacks (`_layer_weight_names`)."""
    names = {name: (name,) for name in EMBEDDING_NAMES}
    for stack, num_layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for index in range(num_layers):
            names.update(_layer_weight_names(stack, index))
    return names


def _positional_encoding_layout(marian_model: MarianMTModel) -> str:
    """The layout of Marian's sinusoidal tables: "concatenated" as Marian builds them, or "interleaved" (the paper's,
    §3.5) as `to_marian` fills them for a model with that layout.

    Raises:
        ValueError: if the encoder's or the decoder's table is neither (trained or altered positions).
    """
    tables = [stack.embed_positions.weight for stack in (marian_model.model.encoder, marian_model.model.decoder)]
    # Marian computes its table with numpy: it may differ from ours by a rounding step of its dtype.
    tolerance = 4 * torch.finfo(tables[0].dtype).eps
    for layout in POSITIONAL_ENCODING_LAYOUTS:
        expected = sinusoidal_positional_encoding(*tables[0].shape, layout=layout)  # (positions, d_model)
        if all(torch.allclose(table.float().cpu(), expected, rtol=0, atol=tolerance) for table in tables):
            return layout
    raise ValueError(
        "MarianMTModel's positional tables are not the sinusoids of §3.5 in either layout "
        f"{POSITIONAL_ENCODING_LAYOUTS}; this model cannot represent other positional encodings."
    )


@torch.no_grad()
def from_marian(marian_model: MarianMTModel) -> VaswaniTransformerForConditionalGeneration:
    """Build a `VaswaniTransformerForConditionalGeneration` that computes exactly what `marian_model` computes.

    Args:
        marian_model: a transformers `MarianMTModel` (any dtype; the result has the same dtype, in eval mode).
    Returns:
        The converted model, whose logits and `generate()` outputs equal Marian's up to float rounding; its
        `positional_encoding_layout` is that of Marian's tables ("concatenated" unless made by `to_marian`).
    Raises:
        ValueError: naming what cannot be represented: a non-zero `final_logits_bias` (the paper's softmax layer has
            no bias), separate vocabularies, LayerDrop (see `config_from_marian`), positional tables that are not
            sinusoids.
        TypeError: if `marian_model` is not a `MarianMTModel`.
    """
    if not isinstance(marian_model, MarianMTModel):
        raise TypeError(f"from_marian expects a transformers MarianMTModel, got {type(marian_model).__name__}.")
    if marian_model.final_logits_bias.abs().max() != 0:
        raise ValueError(
            "MarianMTModel.final_logits_bias is non-zero; the paper's pre-softmax linear transformation has no bias "
            "(§3.4), so this model cannot represent it."
        )
    config = config_from_marian(marian_model.config)
    config.positional_encoding_layout = _positional_encoding_layout(marian_model)
    config._attn_implementation = marian_model.config._attn_implementation
    marian = marian_model.state_dict()
    weights = {ours: torch.cat([marian[name] for name in names]) for ours, names in _weight_names(config).items()}

    model = VaswaniTransformerForConditionalGeneration(config).to(marian_model.dtype)
    tied = {"model.decoder.embed_tokens.weight", "lm_head.weight"} if config.tie_word_embeddings else set()
    for name in tied:
        del weights[name]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"Conversion is incomplete: missing {sorted(set(missing) - tied)}, unexpected {unexpected}."
        )
    model.generation_config = marian_model.generation_config
    return model.to(marian_model.device).eval()


@torch.no_grad()
def to_marian(model: VaswaniTransformerForConditionalGeneration) -> MarianMTModel:
    """Build a `MarianMTModel` that computes exactly what `model` computes: the inverse of `from_marian`.

    Each fused projection is split back into Marian's W^Q, W^K, W^V (`qkv_proj` `(3 * d_model, d_model)` into three
    `(d_model, d_model)`; `kv_proj` into two); `fc1`/`fc2`, the LayerNorms and the embeddings are copied as they are.
    Tied embeddings (the paper, §3.4) become Marian's one `shared` matrix; untied ones its separate encoder, decoder
    and output matrices. Marian's positional tables `(max_position_embeddings, d_model)` receive ours, in our layout,
    so `from_marian(to_marian(model))` has `model`'s weights and layout.

    Two limits follow from Marian: it has no positions beyond `max_position_embeddings` (ours are computed on the
    fly), and it does not save its positional tables but rebuilds [sin | cos] ones when loading, so a saved and
    reloaded twin of an "interleaved" model is no longer that model; use the returned one in memory.

    Args:
        model: a `VaswaniTransformerForConditionalGeneration` (any dtype and device; the result has the same, in
            eval mode, with a copy of `model.generation_config`).
    Returns:
        The `MarianMTModel`, whose logits and `generate()` outputs equal ours up to float rounding.
    Raises:
        ValueError: naming what Marian cannot represent (pre-norm, another LayerNorm epsilon; see
            `config_to_marian`).
        TypeError: if `model` is not a `VaswaniTransformerForConditionalGeneration`.
    """
    if not isinstance(model, VaswaniTransformerForConditionalGeneration):
        raise TypeError(f"to_marian expects a VaswaniTransformerForConditionalGeneration, got {type(model).__name__}.")
    config = model.config
    marian_config = config_to_marian(config)
    marian_config._attn_implementation = config._attn_implementation
    ours = model.state_dict()
    weights = {}
    for name, marian_names in _weight_names(config).items():
        for marian_name, part in zip(marian_names, ours[name].chunk(len(marian_names)), strict=True):
            weights[marian_name] = part  # (d_model, ...) rows of the fused projection, or the whole tensor
    weights["model.shared.weight"] = ours["model.encoder.embed_tokens.weight"]
    positions = sinusoidal_positional_encoding(
        config.max_position_embeddings, config.d_model, layout=config.positional_encoding_layout
    )  # (max_position_embeddings, d_model)
    weights["model.encoder.embed_positions.weight"] = weights["model.decoder.embed_positions.weight"] = positions

    marian = MarianMTModel(marian_config).to(model.dtype)
    missing, unexpected = marian.load_state_dict(weights, strict=False)
    if set(missing) - {"final_logits_bias"} or unexpected:
        raise RuntimeError(f"Conversion is incomplete: missing {sorted(missing)}, unexpected {unexpected}.")
    marian.generation_config = copy.deepcopy(model.generation_config)
    return marian.to(model.device).eval()


def load_tokenizer(path: str):
    """The tokenizer saved with a model (a directory or Hub id): ours (`VaswaniTransformerTokenizerFast`), or the one
    its `tokenizer_config.json` names otherwise, through `AutoTokenizer` (the `MarianTokenizer` of a model converted
    from MarianMT, which needs the `sentencepiece` package).

    Raises:
        OSError: if `path` holds no tokenizer (from transformers, naming it).
        ImportError: a Marian tokenizer without the `sentencepiece` package.
    """
    tokenizer_class = get_tokenizer_config(path).get("tokenizer_class")
    if tokenizer_class in (None, VaswaniTransformerTokenizerFast.__name__):
        return VaswaniTransformerTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)
