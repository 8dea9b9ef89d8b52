"""Conversion from transformers' `MarianMTModel` (the Marian NMT Transformer) to this package's model.

Marian's transformer is the paper's architecture with a few options: post-norm layers, sinusoidal positional
encodings with sines and cosines concatenated ([sin | cos], `positional_encoding_layout="concatenated"`), embeddings
scaled by sqrt(d_model) and shared between source, target and the output projection. `from_marian` maps its weights
one to one (the separate W^Q, W^K, W^V of each attention are stacked into our fused projections) and refuses what our
model cannot express.
"""

import torch
from transformers import MarianMTModel

from .configuration_vaswani_transformer import VaswaniTransformerConfig
from .modeling_vaswani_transformer import VaswaniTransformerForConditionalGeneration


__all__ = ["config_from_marian", "from_marian"]


def config_from_marian(marian_config) -> VaswaniTransformerConfig:
    """The `VaswaniTransformerConfig` with the same architecture as a `MarianConfig`.

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


def _attention_weights(prefix: str, marian: dict[str, torch.Tensor], ours: str, cross: bool) -> dict:
    """Stack Marian's q/k/v projections of one attention module into our fused `qkv_proj` or `q_proj` + `kv_proj`."""
    q, k, v = (
        (marian[f"{prefix}.{name}_proj.weight"], marian[f"{prefix}.{name}_proj.bias"]) for name in ("q", "k", "v")
    )
    weights = {
        f"{ours}.out_proj.weight": marian[f"{prefix}.out_proj.weight"],
        f"{ours}.out_proj.bias": marian[f"{prefix}.out_proj.bias"],
    }
    if cross:
        weights.update({f"{ours}.q_proj.weight": q[0], f"{ours}.q_proj.bias": q[1]})
        weights.update(
            {f"{ours}.kv_proj.weight": torch.cat([k[0], v[0]]), f"{ours}.kv_proj.bias": torch.cat([k[1], v[1]])}
        )
    else:
        weights[f"{ours}.qkv_proj.weight"] = torch.cat([q[0], k[0], v[0]])  # (3 * d_model, d_model)
        weights[f"{ours}.qkv_proj.bias"] = torch.cat([q[1], k[1], v[1]])  # (3 * d_model,)
    return weights


def _layer_weights(marian: dict[str, torch.Tensor], stack: str, index: int) -> dict[str, torch.Tensor]:
    prefix = f"model.{stack}.layers.{index}"
    weights = _attention_weights(f"{prefix}.self_attn", marian, f"{prefix}.self_attn", cross=False)
    if stack == "decoder":
        weights.update(_attention_weights(f"{prefix}.encoder_attn", marian, f"{prefix}.encoder_attn", cross=True))
    names = ["self_attn_layer_norm", "final_layer_norm"] + (["encoder_attn_layer_norm"] if stack == "decoder" else [])
    for name in names:
        for kind in ("weight", "bias"):
            weights[f"{prefix}.{name}.{kind}"] = marian[f"{prefix}.{name}.{kind}"]
    for name in ("fc1", "fc2"):
        for kind in ("weight", "bias"):
            weights[f"{prefix}.ffn.{name}.{kind}"] = marian[f"{prefix}.{name}.{kind}"]
    return weights


@torch.no_grad()
def from_marian(marian_model: MarianMTModel) -> VaswaniTransformerForConditionalGeneration:
    """Build a `VaswaniTransformerForConditionalGeneration` that computes exactly what `marian_model` computes.

    Args:
        marian_model: a transformers `MarianMTModel` (any dtype; the result has the same dtype, in eval mode).
    Returns:
        The converted model, whose logits and `generate()` outputs equal Marian's up to float rounding.
    Raises:
        ValueError: naming what cannot be represented: a non-zero `final_logits_bias` (the paper's softmax layer has
            no bias), separate vocabularies, LayerDrop (see `config_from_marian`).
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
    config._attn_implementation = marian_model.config._attn_implementation
    marian = marian_model.state_dict()
    weights = {
        "model.encoder.embed_tokens.weight": marian["model.encoder.embed_tokens.weight"],
        "model.decoder.embed_tokens.weight": marian["model.decoder.embed_tokens.weight"],
        "lm_head.weight": marian["lm_head.weight"],
    }
    for index in range(config.encoder_layers):
        weights.update(_layer_weights(marian, "encoder", index))
    for index in range(config.decoder_layers):
        weights.update(_layer_weights(marian, "decoder", index))

    model = VaswaniTransformerForConditionalGeneration(config).to(marian_model.dtype)
    if config.tie_word_embeddings:
        del weights["model.decoder.embed_tokens.weight"], weights["lm_head.weight"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"model.decoder.embed_tokens.weight", "lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"Conversion is incomplete: missing {sorted(set(missing) - tied)}, unexpected {unexpected}."
        )
    model.generation_config = marian_model.generation_config
    return model.to(marian_model.device).eval()
