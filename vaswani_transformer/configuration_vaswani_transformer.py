"""Configuration of the Transformer of "Attention Is All You Need" (Vaswani et al., 2017, arXiv:1706.03762).

Field names follow the Hugging Face seq2seq convention (`d_model`, `encoder_layers`, `encoder_ffn_dim`, ...); each
field's docstring line gives the paper's symbol. `VaswaniTransformerConfig.base()` and `.big()` are the two models of
Table 3. This file imports only the standard library and transformers: it is copied next to saved models and loaded
with `trust_remote_code=True` where this package is not installed.

Importing it checks the installed transformers first (`require_transformers`): this file is the first of the model's
code that transformers loads, so an older release fails here with one `ImportError` that names both versions.
"""

from __future__ import annotations

import re
from typing import Any

import transformers
from huggingface_hub.dataclasses import strict
from transformers.activations import ACT2FN


__all__ = ["MIN_TRANSFORMERS_VERSION", "VaswaniTransformerConfig", "require_transformers"]

# The oldest transformers release the remote-code files (config, model, tokenizer, pipeline) work with; keep equal to
# the lower bound in pyproject.toml (tests/model/test_floor_version.py checks both). Older 5.x releases fail on the
# `@strict` config below (StrictDataclassDefinitionError), 4.x has no `PreTrainedConfig`. The CI's floor job
# (.ci/run, .ci/floor_version_check.py) checks that a saved model translates the same on this release.
MIN_TRANSFORMERS_VERSION = (5, 4)
LAYER_NORM_POSITIONS = ("post", "pre")
POSITIONAL_ENCODING_LAYOUTS = ("interleaved", "concatenated")


def require_transformers(installed: str) -> None:
    """Check that transformers `installed` (a version string such as "5.3.0") is at least `MIN_TRANSFORMERS_VERSION`.

    Run when this file is imported, with `transformers.__version__`, before anything that older releases lack is used.
    A version string that does not start with "major.minor" is let through.

    Raises:
        ImportError: naming the installed and the required version, and the pip command that installs one.
    """
    match = re.match(r"(\d+)\.(\d+)", installed)
    if match and (int(match[1]), int(match[2])) < MIN_TRANSFORMERS_VERSION:
        required = ".".join(map(str, MIN_TRANSFORMERS_VERSION))
        raise ImportError(
            f"This Vaswani Transformer model needs transformers >= {required}, but transformers {installed} is "
            f"installed: pip install 'transformers>={required},<6'"
        )


require_transformers(transformers.__version__)


@strict(accept_kwargs=True)
class VaswaniTransformerConfig(transformers.PreTrainedConfig):
    r"""Hyper-parameters of the encoder-decoder Transformer (§3, Table 3).

    Each field, its symbol in the paper, and its meaning:

    - `vocab_size`: size of the shared source/target BPE vocabulary (§5.1; 37000 for EN-DE).
    - `d_model` (d_model): width of every sub-layer output and of the embeddings (§3.1; 512 base, 1024 big).
    - `encoder_layers`, `decoder_layers` (N): identical layers in each stack (§3.1; 6).
    - `encoder_attention_heads`, `decoder_attention_heads` (h): parallel attention heads (§3.2.2; 8 base, 16 big).
    - `encoder_ffn_dim`, `decoder_ffn_dim` (d_ff): inner width of the position-wise feed-forward (§3.3, Eq. 2).
    - `dropout` (P_drop): dropout on each sub-layer output and on the embedding + encoding sums (§5.4).
    - `attention_dropout`: dropout on the attention weights (not in the paper; a tensor2tensor option; 0.0).
    - `activation_dropout`: dropout after the activation of Eq. 2 (not in the paper; tensor2tensor; 0.0).
    - `activation_function` (max(0, x) in Eq. 2): "relu" in the paper; any key of `transformers.ACT2FN`.
    - `max_position_embeddings`: positions precomputed for the sinusoidal encoding; longer inputs still work (§3.5).
    - `scale_embedding` (sqrt(d_model)): multiply embeddings by sqrt(d_model) (§3.4).
    - `tie_word_embeddings`: one matrix for the source embedding, the target embedding and the pre-softmax
      projection (§3.4); False gives three separate matrices.
    - `label_smoothing` (eps_ls): label smoothing of the training loss (§5.4; 0.1).
    - `layer_norm_position`: "post", LayerNorm(x + Sublayer(x)), the paper (§3.1); "pre",
      x + Sublayer(LayerNorm(x)), the tensor2tensor/fairseq `normalize_before` variant.
    - `positional_encoding_layout` (PE): "interleaved", PE(pos, 2i) = sin and PE(pos, 2i+1) = cos, the paper
      (§3.5); "concatenated", [sin | cos], as tensor2tensor, fairseq and Marian (needed to import their weights).
    - `layer_norm_eps`: epsilon of every LayerNorm (not stated in the paper; 1e-5 as fairseq and Marian).
    - `init_std`: if set, projection weights ~ N(0, init_std); if None, Xavier-uniform (tensor2tensor, fairseq).
    - `pad_token_id`, `bos_token_id`, `eos_token_id`, `decoder_start_token_id`: `<pad>`=0, `<s>`=1, `</s>`=2;
      the decoder starts from `<s>`.

    Raises:
        ValueError: naming the offending values, when `d_model` is not divisible by a head count, a size is not
            positive, a dropout lies outside [0, 1), `label_smoothing` outside [0, 1), or `activation_function`,
            `layer_norm_position` or `positional_encoding_layout` is unknown.
    """

    model_type = "vaswani_transformer"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the decoder cache (`cache` from transformers 5.25)
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 37000
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    activation_function: str = "relu"
    max_position_embeddings: int = 1024
    scale_embedding: bool = True
    tie_word_embeddings: bool = True
    label_smoothing: float | int = 0.1
    layer_norm_position: str = "post"
    positional_encoding_layout: str = "interleaved"
    layer_norm_eps: float = 1e-5
    init_std: float | None = None
    use_cache: bool = True
    is_encoder_decoder: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1

    def __post_init__(self, **kwargs):
        # Checked here, before `@strict` runs its validators, so that bad values raise a plain ValueError
        # (strict wraps validator errors in its own exception type).
        self.validate_architecture()
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """The checks listed in the class docstring; also run by `@strict` validation when the config is saved."""
        sizes = {
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "encoder_attention_heads": self.encoder_attention_heads,
            "decoder_attention_heads": self.decoder_attention_heads,
            "encoder_ffn_dim": self.encoder_ffn_dim,
            "decoder_ffn_dim": self.decoder_ffn_dim,
            "max_position_embeddings": self.max_position_embeddings,
        }
        bad_sizes = {name: value for name, value in sizes.items() if value <= 0}
        if bad_sizes:
            raise ValueError(f"Sizes must be positive integers, got {bad_sizes}.")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            heads = getattr(self, name)
            if self.d_model % heads != 0:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by {name} ({heads}): each head has d_model / h "
                    "dimensions (§3.2.2)."
                )
        for name in ("dropout", "attention_dropout", "activation_dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}.")
        if self.activation_function not in ACT2FN:
            raise ValueError(
                f"Unknown activation_function {self.activation_function!r}; choose one of {sorted(ACT2FN)}."
            )
        if self.layer_norm_position not in LAYER_NORM_POSITIONS:
            raise ValueError(
                f"Unknown layer_norm_position {self.layer_norm_position!r}; choose one of {LAYER_NORM_POSITIONS}."
            )
        if self.positional_encoding_layout not in POSITIONAL_ENCODING_LAYOUTS:
            raise ValueError(
                f"Unknown positional_encoding_layout {self.positional_encoding_layout!r}; "
                f"choose one of {POSITIONAL_ENCODING_LAYOUTS}."
            )
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"init_std must be positive or None (Xavier-uniform), got {self.init_std}.")

    @classmethod
    def base(cls, vocab_size: int = 37000, **kwargs: Any) -> VaswaniTransformerConfig:
        """The base model of Table 3: N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1, eps_ls=0.1 (65M parameters)."""
        preset = dict(
            d_model=512,
            encoder_layers=6,
            decoder_layers=6,
            encoder_attention_heads=8,
            decoder_attention_heads=8,
            encoder_ffn_dim=2048,
            decoder_ffn_dim=2048,
            dropout=0.1,
            label_smoothing=0.1,
        )
        return cls(vocab_size=vocab_size, **{**preset, **kwargs})

    @classmethod
    def big(cls, vocab_size: int = 37000, **kwargs: Any) -> VaswaniTransformerConfig:
        """The big model of Table 3: N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3 (213M parameters).

        The paper's EN-FR big model used P_drop = 0.1 instead (§6.1): pass `dropout=0.1`.
        """
        preset = dict(
            d_model=1024,
            encoder_layers=6,
            decoder_layers=6,
            encoder_attention_heads=16,
            decoder_attention_heads=16,
            encoder_ffn_dim=4096,
            decoder_ffn_dim=4096,
            dropout=0.3,
            label_smoothing=0.1,
        )
        return cls(vocab_size=vocab_size, **{**preset, **kwargs})
