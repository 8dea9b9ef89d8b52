"""Export to CTranslate2, the inference engine of OpenNMT: the model, weight by weight, and its decoding settings.

CTranslate2's own converters only know the architectures they were written for (`ct2-transformers-converter` reads
Marian, BART, T5, ... by class name), so this module writes the model with CTranslate2's model-specification API
(`ctranslate2.specs.TransformerSpec`, the API its converters use), weight by weight:

- embeddings: `scale_embeddings` multiplies by sqrt(d_model) (§3.4) when `scale_embedding` is set; one matrix for
  source, target and softmax when `tie_word_embeddings` (CTranslate2 stores it once: `spec.optimize()` aliases
  identical arrays);
- positional encoding (§3.5): our own table, in our layout, with `max_positions` rows. CTranslate2 would otherwise
  build [sin | cos] tables with another frequency step, starting at position 1. A table has a fixed length, while our
  model computes positions past it on the fly, so `Translator` refuses inputs or output lengths past it;
- multi-head attention (§3.2.2): self-attention `linear[0]` is our fused `qkv_proj` (rows [W^Q; W^K; W^V]),
  `linear[1]` the output projection; encoder-decoder attention `linear[0]` is `q_proj`, `linear[1]` `kv_proj`
  (rows [W^K; W^V]), `linear[2]` the output projection;
- layers (§3.1): post-norm, LayerNorm(x + Sublayer(x)), is `pre_norm=False`; pre-norm layers and the final LayerNorm
  of pre-norm stacks are `pre_norm=True`; each LayerNorm keeps our epsilon (`layer_norm_epsilon`).

The exported directory holds CTranslate2's `model.bin`, `config.json` and `shared_vocabulary.json`, our tokenizer
(`tokenizer.json`, `tokenizer_config.json`), `vaswani_ctranslate2.json` (`EXPORT_INFO_FILE`: the position limit, the
quantization, and the `translate_batch` options that reproduce the model's `generation_config.json`) and a README.
`translator.Translator` reads it.

`generate()` and CTranslate2 make the same choices with these options: `return_end_token=True` makes CTranslate2's
length penalty count `</s>` as transformers' |Y|^alpha does; `patience=1` stops a sentence once `num_beams`
hypotheses have ended, as `early_stopping=True`; `min_decoding_length=0` and `max_input_length=0` turn off its
defaults (no `</s>` first, inputs cut at 1024 tokens), which `generate()` does not have.

Needs `ctranslate2` (`pip install "vaswani_transformer[export]"`); not one of the files that travel with a saved model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig

from ..configuration_vaswani_transformer import VaswaniTransformerConfig
from ..convert import load_tokenizer
from ..generation_vaswani_transformer import length_penalty_type
from ..modeling_vaswani_transformer import VaswaniTransformerForConditionalGeneration, sinusoidal_positional_encoding
from ..output_dir import check_not_model_dir, check_output_dir
from ..pipeline_translation import _positive_int


__all__ = [
    "COMMAND",
    "EXPORT_INFO_FILE",
    "QUANTIZATIONS",
    "default_max_positions",
    "export_ctranslate2",
    "import_ctranslate2",
    "transformer_spec",
    "translate_batch_options",
    "unsupported_reason",
    "vocabulary",
]

logger = logging.getLogger(__name__)

# The console script that writes an export (named in messages and in the export's README).
COMMAND = "vaswani-export-ct2"
# What the export writes beside CTranslate2's files, read back by `Translator`.
EXPORT_INFO_FILE = "vaswani_ctranslate2.json"
# Weight types of `--quantization` ("none" keeps float32). CTranslate2 converts between types when it loads a model
# (`compute_type`), so this choice sets the file size and the default compute type.
QUANTIZATIONS = ("none", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")
# `activation_function` -> CTranslate2's activation: the names its transformers converter maps the same way.
ACTIVATIONS = {
    "relu": "RELU",
    "gelu": "GELU",
    "gelu_python": "GELU",
    "gelu_new": "GELUTanh",
    "gelu_fast": "GELUTanh",
    "gelu_pytorch_tanh": "GELUTanh",
    "quick_gelu": "GELUSigmoid",
    "silu": "SWISH",
    "swish": "SWISH",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
}
# Vocabulary rows the tokenizer does not have (an embedding padded to a rounder size) get unique unused names.
UNUSED_TOKEN = "<vaswani_unused_{}>"


def import_ctranslate2():
    """The `ctranslate2` module. Raises ImportError with the install command if it is missing."""
    try:
        import ctranslate2
    except ImportError as error:
        raise ImportError(
            'CTranslate2 export needs the ctranslate2 package: pip install "vaswani_transformer[export]"'
        ) from error
    return ctranslate2


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy of a weight (CTranslate2 quantizes from float32)."""
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy().copy()


def _set_linear(spec, linear: torch.nn.Linear) -> None:
    spec.weight = _array(linear.weight)  # (out_features, in_features), as CTranslate2 stores it
    if linear.bias is not None:
        spec.bias = _array(linear.bias)


def _set_layer_norm(spec, layer_norm: torch.nn.LayerNorm) -> None:
    spec.gamma = _array(layer_norm.weight)
    spec.beta = _array(layer_norm.bias)


def _set_stack(spec, stack, positions: np.ndarray, scale_embedding: bool) -> None:
    """The embedding scale, positional table and final LayerNorm (pre-norm) of one stack."""
    spec.scale_embeddings = scale_embedding
    spec.position_encodings.encodings = positions
    if stack.layer_norm is not None:
        _set_layer_norm(spec.layer_norm, stack.layer_norm)


def vocabulary(tokenizer, vocab_size: int) -> list[str]:
    """The token of each of the model's `vocab_size` ids: the tokenizer's, then `UNUSED_TOKEN` names for rows the
    tokenizer does not have.

    Raises:
        ValueError: if the tokenizer has more tokens than the model has embeddings.
    """
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}: "
            "the model cannot embed every token."
        )
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    unused = [UNUSED_TOKEN.format(index) for index in range(len(tokens), vocab_size)]
    if set(unused) & set(tokens):
        raise ValueError(f"The tokenizer already has tokens named like {UNUSED_TOKEN!r}.")
    return tokens + unused


def unsupported_reason(config: VaswaniTransformerConfig) -> str | None:
    """Why a model with `config` cannot be exported (a sentence naming the setting), or None if it can."""
    if config.activation_function not in ACTIVATIONS:
        return (
            f"activation_function={config.activation_function!r}: CTranslate2 has no such activation "
            f"(exportable: {sorted(ACTIVATIONS)})"
        )
    if not isinstance(config.eos_token_id, int):
        return f"eos_token_id={config.eos_token_id!r}: CTranslate2 models have one end token"
    if config.decoder_start_token_id is None:
        return "decoder_start_token_id is None: CTranslate2 needs the token the decoder starts from"
    return None


@torch.no_grad()
def transformer_spec(model: VaswaniTransformerForConditionalGeneration, tokenizer, max_positions: int):
    """The `ctranslate2.specs.TransformerSpec` holding `model`'s weights (see the module docstring for the mapping).

    Args:
        model: the model to export (any dtype or device; weights are copied as float32).
        tokenizer: its tokenizer (the shared vocabulary, §5.1).
        max_positions: rows of the positional table (§3.5) for each stack; the longest source, and the most
            output tokens, the exported model can handle.
    Returns:
        The specification, validated, before `optimize()` (quantization) and `save()`.
    Raises:
        ValueError: naming what cannot be exported (`unsupported_reason`), a tokenizer larger than the vocabulary,
            or a non-positive `max_positions`.
        ImportError: if ctranslate2 is not installed.
    """
    ctranslate2 = import_ctranslate2()
    from ctranslate2.specs import common_spec
    from ctranslate2.specs import transformer_spec as ct2_transformer

    config = model.config
    reason = unsupported_reason(config)
    if reason:
        raise ValueError(f"This model cannot be exported to CTranslate2: {reason}.")
    _positive_int("max_positions", max_positions)
    pre_norm = config.layer_norm_position == "pre"
    activation = getattr(common_spec.Activation, ACTIVATIONS[config.activation_function])
    spec = ct2_transformer.TransformerSpec(
        ct2_transformer.TransformerEncoderSpec(
            config.encoder_layers, config.encoder_attention_heads, pre_norm=pre_norm, activation=activation
        ),
        ct2_transformer.TransformerDecoderSpec(
            config.decoder_layers, config.decoder_attention_heads, pre_norm=pre_norm, activation=activation
        ),
    )
    positions = sinusoidal_positional_encoding(
        max_positions, config.d_model, layout=config.positional_encoding_layout
    ).numpy()  # (max_positions, d_model)
    encoder, decoder = model.model.encoder, model.model.decoder
    _set_stack(spec.encoder, encoder, positions, config.scale_embedding)
    _set_stack(spec.decoder, decoder, positions, config.scale_embedding)
    spec.encoder.embeddings[0].weight = _array(encoder.embed_tokens.weight)  # (vocab_size, d_model)
    spec.decoder.embeddings.weight = _array(decoder.embed_tokens.weight)
    spec.decoder.projection.weight = _array(model.lm_head.weight)  # (vocab_size, d_model), no bias (§3.4)
    for layer_spec, layer in zip(spec.encoder.layer, encoder.layers, strict=True):
        _set_linear(layer_spec.self_attention.linear[0], layer.self_attn.qkv_proj)  # [W^Q; W^K; W^V]
        _set_linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)  # W^O
        _set_layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_layer_norm)
        _set_linear(layer_spec.ffn.linear_0, layer.ffn.fc1)  # W_1, b_1 (Eq. 2)
        _set_linear(layer_spec.ffn.linear_1, layer.ffn.fc2)  # W_2, b_2
        _set_layer_norm(layer_spec.ffn.layer_norm, layer.final_layer_norm)
    for layer_spec, layer in zip(spec.decoder.layer, decoder.layers, strict=True):
        _set_linear(layer_spec.self_attention.linear[0], layer.self_attn.qkv_proj)
        _set_linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)
        _set_layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_layer_norm)
        _set_linear(layer_spec.attention.linear[0], layer.encoder_attn.q_proj)  # W^Q on the decoder states
        _set_linear(layer_spec.attention.linear[1], layer.encoder_attn.kv_proj)  # [W^K; W^V] on the encoder output
        _set_linear(layer_spec.attention.linear[2], layer.encoder_attn.out_proj)
        _set_layer_norm(layer_spec.attention.layer_norm, layer.encoder_attn_layer_norm)
        _set_linear(layer_spec.ffn.linear_0, layer.ffn.fc1)
        _set_linear(layer_spec.ffn.linear_1, layer.ffn.fc2)
        _set_layer_norm(layer_spec.ffn.layer_norm, layer.final_layer_norm)

    tokens = vocabulary(tokenizer, config.vocab_size)
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    spec.config.unk_token = tokenizer.unk_token
    if tokenizer.bos_token is not None:  # a MarianTokenizer has none: CTranslate2's default stays, unused
        spec.config.bos_token = tokenizer.bos_token
    spec.config.eos_token = tokens[config.eos_token_id]
    spec.config.decoder_start_token = tokens[config.decoder_start_token_id]
    spec.config.add_source_eos = False  # our tokenizer already ends every source with </s>
    spec.config.layer_norm_epsilon = config.layer_norm_eps
    spec.validate()
    logger.debug("Built a CTranslate2 %s spec (ctranslate2 %s).", spec.name, ctranslate2.__version__)
    return spec


# generate() settings the export does not carry: CTranslate2 decodes as if each had generate()'s default value.
NOT_EXPORTED = (
    "do_sample",
    "num_return_sequences",
    "num_beam_groups",
    "diversity_penalty",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty",
    "exponential_decay_length_penalty",
    "renormalize_logits",
)


def translate_batch_options(generation_config: GenerationConfig) -> dict[str, Any]:
    """The `ctranslate2.Translator.translate_batch` keyword arguments that decode as `generate()` does with
    `generation_config` (beam size, length penalty, output length, n-gram blocking; see the module docstring).

    Output length: `max_new_tokens`, else `max_length` - 1 (`max_length` counts the decoder start token); the least
    output length is the larger of `min_new_tokens` and `min_length` - 1, as `generate()` enforces both.

    Not carried, each with a warning that names it: `early_stopping` other than True (CTranslate2 always stops a
    sentence once `num_beams` hypotheses have ended), and any setting of `NOT_EXPORTED` that differs from
    `generate()`'s default (sampling, forced or suppressed tokens, several returned sequences, group beam search).

    Raises:
        ValueError: `length_penalty_type="gnmt"` with beams: CTranslate2 has only the |Y|^alpha normalisation.
    """
    defaults = GenerationConfig._get_default_generation_params()  # what generate() uses for unset (None) fields

    def setting(name: str) -> Any:
        value = getattr(generation_config, name, None)
        return defaults.get(name) if value is None else value

    num_beams = setting("num_beams")
    if num_beams > 1 and length_penalty_type(generation_config) != "length":
        raise ValueError(
            f"length_penalty_type={generation_config.length_penalty_type!r}: CTranslate2's beam search divides by "
            "length ** length_penalty only; set generation_config.length_penalty_type = 'length' before exporting"
        )
    if generation_config.max_new_tokens is not None:
        max_decoding_length = generation_config.max_new_tokens
    else:
        max_decoding_length = setting("max_length") - 1
    options = {
        "beam_size": num_beams,
        "length_penalty": float(setting("length_penalty")),
        "patience": 1.0,
        "max_decoding_length": max_decoding_length,
        "min_decoding_length": max(generation_config.min_new_tokens or 0, setting("min_length") - 1, 0),
        "no_repeat_ngram_size": setting("no_repeat_ngram_size"),
        "repetition_penalty": float(setting("repetition_penalty")),
        "return_end_token": True,
        "max_input_length": 0,
    }
    early_stopping = setting("early_stopping")
    if num_beams > 1 and early_stopping is not True:
        logger.warning(
            "generation_config.early_stopping=%r is not exported: CTranslate2 stops a sentence once num_beams "
            "hypotheses have ended (early_stopping=True).",
            early_stopping,
        )
    for name in NOT_EXPORTED:
        if setting(name) != defaults.get(name):
            logger.warning(
                "generation_config.%s=%r is not exported: the CTranslate2 model decodes as if it were %r.",
                name, setting(name), defaults.get(name),
            )  # fmt: skip
    return options


def default_max_positions(config: VaswaniTransformerConfig, tokenizer, output_length: int) -> int:
    """The default positional-table length (rows): the longest of `max_position_embeddings`, the tokenizer's
    `model_max_length` (the pipeline's truncation limit, so any source it accepts fits) and `output_length`, the
    exported `max_decoding_length` in tokens (`translate_batch_options`), so that every output fits."""
    lengths = [config.max_position_embeddings, output_length]
    if tokenizer.model_max_length < 10**9:  # transformers' "no limit" is a huge integer
        lengths.append(tokenizer.model_max_length)
    return max(lengths)


def _readme(source: str, info: dict[str, Any]) -> str:
    options = ", ".join(f"{key}={value!r}" for key, value in info["translate_batch"].items())
    return f"""# CTranslate2 export of {source}

Written by `{COMMAND}` (vaswani_transformer) with ctranslate2 {info["ctranslate2_version"]}, weights
{info["quantization"]}. Translate with the helper, which tokenizes, truncates, batches and decodes as the model's
translation pipeline does:

```python
from vaswani_transformer.export import Translator

translator = Translator("{info["output_dir_name"]}")
translator.translate(["A man is riding a bicycle."])
```

or with CTranslate2 alone, from our tokenizer's tokens (a source ends with `</s>`):

```python
import ctranslate2

translator = ctranslate2.Translator("{info["output_dir_name"]}")
translator.translate_batch([tokens], {options})
```

The positional table has {info["max_positions"]} rows: sources of more tokens, and outputs of more tokens, are
refused (`Translator` truncates sources to the tokenizer's `model_max_length` first, as the pipeline does). Export
again with `--max_positions` for longer ones.
"""


def export_ctranslate2(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    quantization: str = "none",
    max_positions: int | None = None,
    overwrite_output_dir: bool = False,
) -> Path:
    """Write `model_dir`'s model as a CTranslate2 model directory (see the module docstring for what it holds).

    Args:
        model_dir: a `save_pretrained` directory or Hub id with model, tokenizer and generation config.
        output_dir: the directory to write; it is built in a folder beside it and renamed into place, so an
            interrupted export leaves nothing half-written, and a replaced export stays whole until the new one is
            in place. Never the model directory or a folder holding it.
        quantization: one of `QUANTIZATIONS` ("none": float32 weights).
        max_positions: rows of the positional table (default: `default_max_positions`).
        overwrite_output_dir: replace an existing non-empty `output_dir` (refused otherwise).
    Returns:
        `output_dir` as a Path.
    Raises:
        FileExistsError: if `output_dir` is a file, is not empty (without `overwrite_output_dir`), or is or holds
            `model_dir` (the rules of the `vaswani_transformer.output_dir` module, which name the folder).
        ValueError: an unknown `quantization`, a non-positive `max_positions`, or a model that cannot be exported
            (the message names the setting).
        OSError: if `model_dir` cannot be loaded.
        ImportError: if ctranslate2 is not installed.
    """
    ctranslate2 = import_ctranslate2()
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: choose one of {QUANTIZATIONS}.")
    if max_positions is not None:
        _positive_int("max_positions", max_positions)
    output_dir = Path(output_dir)
    check_not_model_dir(output_dir, model_dir, "the export")
    check_output_dir(output_dir, overwrite_output_dir)
    model = VaswaniTransformerForConditionalGeneration.from_pretrained(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)  # ours, or the MarianTokenizer of a model converted from MarianMT
    options = translate_batch_options(model.generation_config)
    max_positions = max_positions or default_max_positions(model.config, tokenizer, options["max_decoding_length"])
    spec = transformer_spec(model, tokenizer, max_positions)
    spec.optimize(quantization=None if quantization == "none" else quantization)
    info = {
        "source_model": str(model_dir),
        "quantization": "float32" if quantization == "none" else quantization,
        "max_positions": max_positions,
        "vocab_size": model.config.vocab_size,
        "ctranslate2_version": ctranslate2.__version__,
        "translate_batch": options,
    }

    # Written beside output_dir (same file system: the renames are atomic) under names no one else uses; mkdir, not
    # mkdtemp, so that the export gets the user's usual permissions (mkdtemp makes a folder only its owner can read).
    target = output_dir.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging, previous = (target.parent / f".{target.name}.{kind}-{unique}" for kind in ("new", "old"))
    staging.mkdir()
    try:
        spec.save(str(staging))
        tokenizer.save_pretrained(staging)
        (staging / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        readme = _readme(str(model_dir), {**info, "output_dir_name": target.name})
        (staging / "README.md").write_text(readme, encoding="utf-8")
        if target.exists():  # allowed by check_output_dir: empty, or replaced with overwrite_output_dir
            target.rename(previous)  # the old export stays whole until the new one is in place
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous.exists() and not target.exists():
            previous.rename(target)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    logger.info(
        "Wrote the CTranslate2 model (%s weights, %d positions) to %s", info["quantization"], max_positions, output_dir
    )
    return output_dir
