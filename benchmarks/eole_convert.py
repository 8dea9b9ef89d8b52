"""A saved `VaswaniTransformerForConditionalGeneration` as an eole 0.6.4 model directory (`convert_to_eole`), for
`benchmarks.eole_peer.EoleTranslator`; what is exactly our model in eole and what is not: benchmarks/README.md.

eole is imported only inside these functions, so this module imports without it; `eole_available()` says whether the
release it was written against is installed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.modeling_vaswani_transformer import sinusoidal_positional_encoding
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast


__all__ = ["EOLE_VERSION", "MARKER_FILE", "convert_to_eole", "eole_available", "quiet_eole", "require_eole"]

EOLE_VERSION = "0.6.4"  # the release this module follows (its post-norm decoder layer overrides a private method)
EOLE_MAX_POSITIONS = 5000  # rows of eole.modules.embeddings.PositionalEncoding's table (max_len, not configurable)
MARKER_FILE = "vaswani_transformer.json"  # what EoleTranslator must know that eole's config.json cannot hold
# transformers' activation names (our config.activation_function) -> eole's ActivationFunction, same function
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": "silu", "swish": "silu"}


def eole_available() -> bool:
    """True if eole is importable and is release `EOLE_VERSION`, the one this module was written against and checked
    with (other releases may rename what the converter writes or what `PostNormTransformerDecoderLayer` overrides).
    Imports nothing."""
    if importlib.util.find_spec("eole") is None:
        return False
    try:
        return importlib.metadata.version("eole") == EOLE_VERSION
    except importlib.metadata.PackageNotFoundError:
        return False


def require_eole() -> None:
    """Raises ImportError naming the missing release unless `eole_available()`."""
    if not eole_available():
        raise ImportError(
            f"benchmarks.eole_peer needs eole=={EOLE_VERSION} (pip install eole=={EOLE_VERSION} -c <file pinning the "
            "torch already installed>)"
        )


@contextlib.contextmanager
def quiet_eole() -> Iterator[None]:
    """Silence what importing and building eole prints: RuntimeWarnings about its optional CUDA extensions
    (`eole._ops`, flash_attn) and the INFO log of `eole.utils.logging.init_logger`, which `InferenceEnginePY`
    sets up with a console handler. Afterwards the "eole" logger reports warnings and errors only."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
    logger = logging.getLogger("eole")
    handler = logging.StreamHandler()  # bound to the real stderr, now restored
    handler.setFormatter(logging.Formatter("[eole %(levelname)s] %(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING)


def _eole_model_config(config: VaswaniTransformerConfig) -> dict:
    """eole's `model` section (`eole.config.models.TransformerModelConfig`) for our config.

    Raises:
        ValueError: naming what eole cannot represent: embeddings not scaled by sqrt(d_model) (eole's
            `PositionalEncoding.forward` always scales), an activation without an eole equivalent.
    """
    if not config.scale_embedding:
        raise ValueError("scale_embedding=False: eole's sinusoidal PositionalEncoding always multiplies by sqrt(d).")
    if config.activation_function not in ACTIVATIONS:
        raise ValueError(
            f"activation_function={config.activation_function!r} has no eole equivalent; one of {sorted(ACTIVATIONS)}"
        )
    layout = {"interleaved": "SinusoidalInterleaved", "concatenated": "SinusoidalConcat"}
    post_norm = config.layer_norm_position == "post"
    stack = {"hidden_size": config.d_model, "add_qkvbias": True, "add_final_linear_bias": True, "add_ffnbias": True}
    stack.update(
        mlp_activation_fn=ACTIVATIONS[config.activation_function],
        layer_norm="standard",
        norm_eps=config.layer_norm_eps,
    )
    return {
        "architecture": "transformer",
        "embeddings": {
            "word_vec_size": config.d_model,
            # descriptive only: the converter writes our table into eole's buffer (eole's own SinusoidalConcat is
            # tensor2tensor's, with another frequency spacing than ours)
            "position_encoding_type": layout[config.positional_encoding_layout],
        },
        "encoder": {
            **stack,
            "layers": config.encoder_layers,
            "heads": config.encoder_attention_heads,
            "transformer_ff": config.encoder_ffn_dim,
            "encoder_layer_style": "postnorm" if post_norm else "standard",
            "final_encoder_layer_norm": not post_norm,
        },
        "decoder": {
            **stack,
            "layers": config.decoder_layers,
            "heads": config.decoder_attention_heads,
            "transformer_ff": config.decoder_ffn_dim,
        },
        "share_embeddings": config.tie_word_embeddings,
        "share_decoder_embeddings": config.tie_word_embeddings,
        "generator_bias": False,  # the pre-softmax linear transformation has no bias (§3.4)
        "left_pad": False,
    }


# Our sub-module name -> eole's, per layer; several eole names split our fused projection into its row blocks, in
# order: self-attention `qkv_proj` (3 * d_model, d_model) = [W^Q; W^K; W^V], encoder-decoder `kv_proj` = [W^K; W^V].
# LayerNorms take the names eole's own M2M100 converter gives them (eole/bin/convert/HF_mappings.py): in the decoder,
# that of the self-attention sub-layer is `input_layernorm`, of encoder-decoder attention `precontext_layernorm`, of
# the feed-forward network `post_attention_layernorm`, whichever side of its sub-layer it sits on.
LAYER_NAMES = {
    "self_attn.qkv_proj": ("self_attn.linear_query", "self_attn.linear_keys", "self_attn.linear_values"),
    "self_attn.out_proj": ("self_attn.final_linear",),
    "ffn.fc1": ("mlp.gate_up_proj",),
    "ffn.fc2": ("mlp.down_proj",),
}
DECODER_LAYER_NAMES = {
    **LAYER_NAMES,
    "encoder_attn.q_proj": ("context_attn.linear_query",),
    "encoder_attn.kv_proj": ("context_attn.linear_keys", "context_attn.linear_values"),
    "encoder_attn.out_proj": ("context_attn.final_linear",),
    "self_attn_layer_norm": ("input_layernorm",),
    "encoder_attn_layer_norm": ("precontext_layernorm",),
    "final_layer_norm": ("post_attention_layernorm",),
}
ENCODER_LAYER_NAMES = {  # by layer_norm_position: eole's postnorm encoder layer names its LayerNorms by their place
    "post": {
        **LAYER_NAMES,
        "self_attn_layer_norm": ("attention_layer_norm",),
        "final_layer_norm": ("output_layer_norm",),
    },
    "pre": {
        **LAYER_NAMES,
        "self_attn_layer_norm": ("input_layernorm",),
        "final_layer_norm": ("post_attention_layernorm",),
    },
}


def _eole_weights(model: VaswaniTransformerForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Our weights under the names `eole.models.EncoderDecoderModel` gives its parameters (`LAYER_NAMES` and the
    tables after it), the positional table ours (§3.5, `sinusoidal_positional_encoding`, eole's buffer shape).
    Tied embeddings (§3.4) are written as `src_emb` and `tgt_emb` (one matrix again once eole's `share_embeddings`
    ties them) and without `generator.weight` (`share_decoder_embeddings` ties it). A post-norm model gets an
    identity final decoder LayerNorm (weight 1, bias 0), which `EoleTranslator` replaces by `nn.Identity`.

    Returns:
        name -> float32 tensor, each its own storage (safetensors refuses shared ones).
    Raises:
        RuntimeError: if some weight of ours found no eole name (a conversion that would drop weights).
    """
    config = model.config
    ours = model.state_dict()
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        used.add(name)
        return ours[name]

    weights = {"src_emb.embeddings.weight": take("model.encoder.embed_tokens.weight")}
    if config.tie_word_embeddings:
        used.update({"model.decoder.embed_tokens.weight", "lm_head.weight"})
        weights["tgt_emb.embeddings.weight"] = weights["src_emb.embeddings.weight"]
    else:
        weights["tgt_emb.embeddings.weight"] = take("model.decoder.embed_tokens.weight")
        weights["generator.weight"] = take("lm_head.weight")
    positions = sinusoidal_positional_encoding(EOLE_MAX_POSITIONS, config.d_model, config.positional_encoding_layout)
    weights["src_emb.pe.pe"] = weights["tgt_emb.pe.pe"] = positions.unsqueeze(1)  # (max_len, 1, d_model), as eole's

    layer_names = {"encoder": ENCODER_LAYER_NAMES[config.layer_norm_position], "decoder": DECODER_LAYER_NAMES}
    for stack, num_layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for index, (name, eole_names), kind in itertools.product(
            range(num_layers), layer_names[stack].items(), ("weight", "bias")
        ):
            blocks = take(f"model.{stack}.layers.{index}.{name}.{kind}").chunk(len(eole_names))  # (d_model, ...) each
            for eole_name, block in zip(eole_names, blocks, strict=True):
                weights[f"{stack}.transformer_layers.{index}.{eole_name}.{kind}"] = block
        if config.layer_norm_position == "pre":  # pre-norm stacks end with a LayerNorm, in both models
            for kind in ("weight", "bias"):
                weights[f"{stack}.layer_norm.{kind}"] = take(f"model.{stack}.layer_norm.{kind}")
    if config.layer_norm_position == "post":
        weights["decoder.layer_norm.weight"] = torch.ones(config.d_model)
        weights["decoder.layer_norm.bias"] = torch.zeros(config.d_model)

    left = set(ours) - used
    if left:
        raise RuntimeError(f"eole conversion would drop weights: {sorted(left)}")
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in weights.items()}


def convert_to_eole(
    model_dir: str | Path, out_dir: str | Path, tokenizer: VaswaniTransformerTokenizerFast | None = None
) -> Path:
    """Write an eole 0.6.4 model directory holding the weights of the model saved in `model_dir`.

    Follows the directory eole's `eole convert HF` writes (`eole/bin/convert/convert_HF.py`): `config.json` (an
    `eole.config.run.TrainConfig`, validated by eole and saved with `eole.config.recursive_model_fields_set`),
    `vocab.json` (`eole.inputters.inputter.vocabs_to_dict`: our tokenizer's pieces in id order, so eole's ids are
    ours), `model.00.safetensors` (`_eole_weights`, float32), plus `vaswani_transformer.json` (the layer norm
    position, read by `EoleTranslator`) and a README.md. No tokenizer transform is configured: eole reads pieces
    separated by spaces, which `EoleTranslator` writes.

    Args:
        model_dir: a directory saved by `VaswaniTransformerForConditionalGeneration.save_pretrained`.
        out_dir: where to write; created if missing, files of the same names overwritten.
        tokenizer: the tokenizer whose pieces name eole's vocabulary; default: the one saved in `model_dir`.
    Returns:
        `out_dir` as a Path.
    Raises:
        ImportError: if eole==0.6.4 is not installed.
        ValueError: what eole cannot represent (`_eole_model_config`), a tokenizer with fewer pieces than
            `vocab_size`, or a piece containing whitespace (eole splits its input on spaces).
        OSError: if `model_dir` does not hold a readable model or tokenizer (from `from_pretrained`).
    """
    require_eole()
    with quiet_eole():
        import pyonmttok
        from eole.config import recursive_model_fields_set
        from eole.config.run import TrainConfig
        from eole.inputters.inputter import vocabs_to_dict

    model = VaswaniTransformerForConditionalGeneration.from_pretrained(model_dir).eval()
    config = model.config
    tokenizer = tokenizer or VaswaniTransformerTokenizerFast.from_pretrained(model_dir)
    pieces = tokenizer.convert_ids_to_tokens(list(range(config.vocab_size)))
    if None in pieces:
        raise ValueError(f"the tokenizer has {len(tokenizer)} pieces, the model {config.vocab_size} ids")
    spaced = [piece for piece in pieces if piece == "" or any(char.isspace() for char in piece)]
    if spaced:
        raise ValueError(f"eole splits its input on spaces; these pieces contain whitespace: {spaced[:5]}")
    token = tokenizer.convert_ids_to_tokens
    specials = {
        "bos_token": token(config.bos_token_id),
        "eos_token": token(config.eos_token_id),
        "pad_token": token(config.pad_token_id),
        "unk_token": tokenizer.unk_token,
    }
    train_config = TrainConfig(
        data={},
        src_vocab=None,
        share_vocab=True,
        src_vocab_size=config.vocab_size,
        tgt_vocab_size=config.vocab_size,
        decoder_start_token=token(config.decoder_start_token_id),
        **specials,
        model=_eole_model_config(config),
        training={"compute_dtype": "fp32"},
    )
    vocab = pyonmttok.build_vocab_from_tokens(pieces)
    vocabs = {
        "src": vocab,
        "tgt": vocab,
        "specials": specials,
        "decoder_start_token": train_config.decoder_start_token,
    }

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "config.json", "w", encoding="utf-8") as file:
        json.dump(recursive_model_fields_set(train_config), file, indent=2, ensure_ascii=False)
    with open(out_dir / "vocab.json", "w", encoding="utf-8") as file:
        json.dump(vocabs_to_dict(vocabs), file, indent=2, ensure_ascii=False)
    save_file(_eole_weights(model), out_dir / "model.00.safetensors")
    marker = {"source": str(model_dir), "layer_norm_position": config.layer_norm_position, "eole": EOLE_VERSION}
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(
        f"eole {EOLE_VERSION} conversion of {model_dir} by benchmarks/eole_convert.py (convert_to_eole).\n\n"
        + (
            "Post-norm model: load it with benchmarks.eole_peer.EoleTranslator, which gives eole's decoder layers "
            "the paper's post-norm order. Plain eole (`eole predict`) would run its pre-norm decoder on these "
            "weights: a different function.\n"
            if config.layer_norm_position == "post"
            else "Pre-norm model: eole's own layers compute it; `eole predict` works as is.\n"
        ),
        encoding="utf-8",
    )
    return out_dir
