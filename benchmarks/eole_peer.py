"""eole 0.6.4 (OpenNMT's PyTorch successor) as a translation peer holding our weights.

`convert_to_eole` writes an eole model directory (`config.json`, `vocab.json`, `model.00.safetensors`, the layout
eole's own `eole convert HF` writes) from a saved `VaswaniTransformerForConditionalGeneration`; `EoleTranslator`
loads it once with eole's in-process engine (`eole.inference_engine.InferenceEnginePY`) and translates token ids
with eole's batching, beam search and length penalty. eole is imported only inside these functions, so this module
imports without it; `eole_available()` says whether the version it was written against is installed.

What is exactly our model, and what is not:

- Encoder (§3.1): eole's `TransformerEncoderLayer` with `encoder_layer_style: postnorm` and no final LayerNorm
  (`final_encoder_layer_norm: false`) is LayerNorm(x + Sublayer(x)), ours; pre-norm models map to eole's default
  ("standard") layers and final LayerNorm.
- Decoder: eole 0.6.4's `TransformerDecoderLayer` is pre-norm only (no option moves its LayerNorms) and its stack
  always ends with a LayerNorm. For a post-norm model `EoleTranslator` therefore replaces, after eole has built and
  loaded the model, the class of each decoder layer by `PostNormTransformerDecoderLayer` (a subclass whose
  `_forward_eager` calls the same eole sub-modules and KV caches in post-norm order) and the stack's final LayerNorm
  by `nn.Identity`. This is the only change to eole's objects, and it is unavoidable: no eole setting computes the
  paper's decoder. The directory `convert_to_eole` writes for a post-norm model is therefore only correct through
  `EoleTranslator`; loaded by plain eole (`eole predict`) it computes pre-norm math (its README.md says so).
  Pre-norm models need no change.
- Positions (§3.5): eole's `SinusoidalInterleaved` table is the paper's layout but computed in float32 (up to 6e-5
  off ours within 1,024 positions); its table is a saved buffer, so the converter writes ours, computed by
  `sinusoidal_positional_encoding`, in its place. eole's table has 5,000 rows: longer sequences raise there.
- Beam search is eole's, not transformers'; see `EoleTranslator.translate` for how its length penalty and stopping
  rule differ. Greedy search (one beam) has no such freedom.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import io
import itertools
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.modeling_vaswani_transformer import sinusoidal_positional_encoding
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast


__all__ = ["EOLE_VERSION", "EoleTranslator", "convert_to_eole", "eole_available"]

EOLE_VERSION = "0.6.4"  # the release this module follows (its post-norm decoder layer overrides a private method)
EOLE_MAX_POSITIONS = 5000  # rows of eole.modules.embeddings.PositionalEncoding's table (max_len, not configurable)
MARKER_FILE = "vaswani_transformer.json"  # what EoleTranslator must know that eole's config.json cannot hold
# transformers' activation names (our config.activation_function) -> eole's ActivationFunction, same function
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": "silu", "swish": "silu"}
LENGTH_PENALTIES = ("avg", "wu", "none")  # eole.config.inference.DecodingConfig.length_penalty


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


def _require_eole() -> None:
    """Raises ImportError naming the missing release unless `eole_available()`."""
    if not eole_available():
        raise ImportError(
            f"benchmarks.eole_peer needs eole=={EOLE_VERSION} (pip install eole=={EOLE_VERSION} -c <file pinning the "
            "torch already installed>)"
        )


@contextlib.contextmanager
def _quiet_eole() -> Iterator[None]:
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


@contextlib.contextmanager
def _eole_sdpa_backends() -> Iterator[None]:
    """Run eole with the CUDA attention backends it chooses, and give the process its own back afterwards.

    `InferenceEngine.__init__` calls `eole.utils.misc.configure_cuda_backends()`, which switches process-wide flags
    (flash and math sdpa off, memory-efficient on); left so, they would also change how our model's sdpa runs in
    the same process. CPU runs do not read these flags.
    """
    from eole.utils.misc import configure_cuda_backends

    flags = ("flash_sdp", "mem_efficient_sdp", "math_sdp", "cudnn_sdp")
    saved = {flag: getattr(torch.backends.cuda, f"{flag}_enabled")() for flag in flags}
    configure_cuda_backends()
    try:
        yield
    finally:
        for flag, enabled in saved.items():
            getattr(torch.backends.cuda, f"enable_{flag}")(enabled)


# Conversion -------------------------------------------------------------------------------------------------------


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
    _require_eole()
    with _quiet_eole():
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
        f"eole {EOLE_VERSION} conversion of {model_dir} by benchmarks/eole_peer.py (convert_to_eole).\n\n"
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


# Post-norm decoder layer ------------------------------------------------------------------------------------------


@functools.cache
def _post_norm_decoder_layer_class() -> type:
    """`PostNormTransformerDecoderLayer`, built on first use so that eole is imported only then."""
    from eole.decoders.transformer import TransformerDecoderLayer

    class PostNormTransformerDecoderLayer(TransformerDecoderLayer):
        """§3.1 decoder layer on eole's sub-modules, post-norm: each sub-layer's output is
        LayerNorm(x + Sublayer(x)). The LayerNorms are eole's, named as `_eole_weights` fills them:
        `input_layernorm` closes self-attention, `precontext_layernorm` encoder-decoder attention,
        `post_attention_layernorm` the feed-forward network.

        Overrides `TransformerDecoderLayer._forward_eager` (eole/decoders/transformer.py, 0.6.4), which the
        decoder stack calls with the keyword arguments read below; self-attention keeps its KV cache as in eole.
        Not for eole's torch.compile paths (`EOLE_TORCH_COMPILE=1`), which bind the parent's method at build time.
        """

        def _forward_eager(self, layer_in: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
            """`(batch, tgt_len, d_model)` -> same shape, and the encoder-decoder attention weights
            `(batch, heads, tgt_len, src_len)` or None (eole returns them only when asked or on CPU)."""
            self_attn, _ = self.self_attn(
                layer_in,
                attn_mask=kwargs.get("attn_mask"),
                position_embeddings=kwargs.get("position_embeddings"),
                cache_seqlens=kwargs.get("cache_seqlens"),
                cache_slice=kwargs.get("cache_slice"),
            )  # (batch, tgt_len, d_model)
            hidden = self.input_layernorm(layer_in + self.dropout(self_attn))
            enc_out = kwargs["enc_out"]  # (batch, src_len, d_model)
            context, attns = self.context_attn(
                enc_out, enc_out, hidden, attn_mask=~kwargs["src_pad_mask"], return_attn=kwargs.get("return_attn")
            )  # (batch, tgt_len, d_model)
            hidden = self.precontext_layernorm(hidden + self.dropout(context))
            return self.post_attention_layernorm(hidden + self.mlp(hidden)), attns

    return PostNormTransformerDecoderLayer


def _use_post_norm_decoder(decoder: torch.nn.Module) -> None:
    """Make a loaded eole `TransformerDecoder` compute the paper's post-norm decoder: each layer becomes a
    `PostNormTransformerDecoderLayer` (same parameters, buffers and caches; only the forward order changes) and the
    stack's final LayerNorm an identity (post-norm layers end normalised).

    Raises:
        RuntimeError: under `EOLE_TORCH_COMPILE=1`, whose compiled graphs would keep eole's pre-norm forward.
    """
    import eole

    if eole.EOLE_TORCH_COMPILE:
        raise RuntimeError("EOLE_TORCH_COMPILE=1 compiles eole's pre-norm decoder layer; unset it for this model")
    layer_class = _post_norm_decoder_layer_class()
    for layer in decoder.transformer_layers:
        layer.__class__ = layer_class
    decoder.layer_norm = torch.nn.Identity()


# Translation ------------------------------------------------------------------------------------------------------


class EoleTranslator:
    """A converted model (`convert_to_eole`), loaded once into eole's in-process engine
    (`eole.inference_engine.InferenceEnginePY`, fp32, eager PyTorch), translating token ids.

    Args:
        eole_dir: a directory written by `convert_to_eole`.
        device: "cpu" or "cuda" (eole's first GPU, `gpu_ranks=[0]`).
    Raises:
        ImportError: if eole==0.6.4 is not installed.
        FileNotFoundError: if `eole_dir` lacks the files `convert_to_eole` writes.
        ValueError: for a device other than "cpu" and "cuda".
        RuntimeError: for a post-norm model under `EOLE_TORCH_COMPILE=1` (`_use_post_norm_decoder`).
    """

    def __init__(self, eole_dir: str | Path, device: str = "cpu"):
        _require_eole()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r}; 'cpu' or 'cuda'")
        eole_dir = Path(eole_dir)
        if not (eole_dir / MARKER_FILE).is_file():
            raise FileNotFoundError(f"{eole_dir / MARKER_FILE} is missing: write the directory with convert_to_eole")
        marker = json.loads((eole_dir / MARKER_FILE).read_text(encoding="utf-8"))
        with _quiet_eole():
            from eole.config.run import PredictConfig
            from eole.inference_engine import InferenceEnginePY
            from eole.predict.beam_search import GNMTGlobalScorer

            with _eole_sdpa_backends():
                config = PredictConfig(
                    model_path=str(eole_dir),
                    src="",  # unused: translate() passes its inputs to infer_list
                    compute_dtype="fp32",
                    gpu_ranks=[0] if device == "cuda" else [],
                    world_size=1,
                    n_best=1,
                    report_time=False,
                )
                self.engine = InferenceEnginePY(config)
        self._scorer_class = GNMTGlobalScorer
        self.layer_norm_position = marker["layer_norm_position"]
        if self.layer_norm_position == "post":
            _use_post_norm_decoder(self.engine.predictor.model.decoder)
        self.pieces: list[str] = list(self.engine.vocabs["tgt"].ids_to_tokens)  # id -> piece, our ids
        self.piece_ids = {piece: index for index, piece in enumerate(self.pieces)}

    def translate(
        self,
        input_ids: Sequence[Sequence[int]],
        num_beams: int = 4,
        batch_size: int = 32,
        batch_type: str = "sents",
        length_penalty: float = 0.6,
        length_penalty_type: str = "avg",
        max_new_tokens: int = 178,
        n_best: int = 1,
    ) -> list[list[int]]:
        """Translate source token ids with eole's batching and search (`InferenceEnginePY.infer_list`).

        Args:
            input_ids: one list of source ids per sentence, as our tokenizer makes them (`</s>` last, no padding;
                eole adds nothing to the source).
            num_beams: eole's `beam_size`; 1 is greedy search (eole's `BeamSearch` with one beam, argmax).
            batch_size, batch_type: eole's batching (`eole/inputters/dynamic_iterator.py`): "sents" counts
                sentences, "tokens" the padded source tokens (sentences x longest source). eole first sorts the
                inputs by length (in buckets of 16,384), so its batches hold sentences of similar length, not
                consecutive ones; results come back in input order.
            length_penalty: alpha, eole's `alpha`. transformers ranks finished hypotheses by sum(log p) / n^alpha
                (n generated tokens, `</s>` included); eole's "avg" by sum(log p) / (n + 1)^alpha (it counts the
                start token too, `eole/predict/beam_search.py` `advance`), "wu" by ((5 + n + 1) / 6)^alpha, "none"
                not at all. No eole option is transformers' rule exactly.
            length_penalty_type: "avg", "wu" or "none" (`eole.predict.penalties.PenaltyBuilder`).
            max_new_tokens: longest output, `</s>` included (eole's `max_length`; its `max_length_ratio` cap,
                2 x source length + 5 by default, is switched off to match `generate`).
            n_best: eole's `n_best`, which is also its stopping rule: a sentence stops at the first step whose
                best-scoring candidate ends with `</s>` once `n_best` hypotheses have finished. eole's default, 1,
                stops at the first such step; `n_best=num_beams` is nearer transformers' `early_stopping=True`
                (stop when `num_beams` hypotheses have finished) and searches longer. Only the best is returned.
        Returns:
            One list of generated ids per input, in input order, without the start token and the final `</s>`.
        Raises:
            ValueError: an id outside the vocabulary, an empty source, an unknown `batch_type` or
                `length_penalty_type`, a non-positive `num_beams`, `batch_size`, `max_new_tokens` or `n_best`, or
                `n_best > num_beams`.
            RuntimeError: if eole returns another number of translations than it was given.

        eole's beam search also differs from transformers' in what it keeps: `beam_size` candidates per step, finished
        ones included (a finished beam's slot is dead from then on), where transformers keeps `num_beams` live beams.
        """
        if length_penalty_type not in LENGTH_PENALTIES:
            raise ValueError(f"length_penalty_type={length_penalty_type!r}; one of {LENGTH_PENALTIES}")
        if batch_type not in ("sents", "tokens"):
            raise ValueError(f"batch_type={batch_type!r}; 'sents' or 'tokens'")
        if min(num_beams, batch_size, max_new_tokens, n_best) < 1 or n_best > num_beams:
            raise ValueError("num_beams, batch_size, max_new_tokens and n_best must be positive, n_best <= num_beams")
        if not input_ids:
            return []
        lines = []
        for ids in input_ids:
            if not ids or min(ids) < 0 or max(ids) >= len(self.pieces):
                raise ValueError(f"source ids must be non-empty and in [0, {len(self.pieces)}): {list(ids)[:8]}")
            lines.append(" ".join(self.pieces[index] for index in ids))
        # eole warns that alpha 0 or "none" means no penalty, and its Config.update uses pydantic 1 methods
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scorer = self._scorer_class(length_penalty, 0.0, length_penalty_type, "none")
            self.engine.config.update(batch_size=batch_size, batch_type=batch_type)  # read by infer_list's iterator
        settings = {"beam_size": num_beams, "max_length": max_new_tokens, "max_length_ratio": 0, "n_best": n_best}
        settings["global_scorer"] = scorer  # Inference.update_settings sets any attribute the predictor has
        with _eole_sdpa_backends():
            _, _, predictions = self.engine.infer_list(lines, settings=settings)
        if len(predictions) != len(lines):
            raise RuntimeError(f"eole returned {len(predictions)} translations for {len(lines)} inputs")
        return [[self.piece_ids[piece] for piece in best[0].split(" ") if piece] for best in predictions]

    def close(self) -> None:
        """Release eole's worker thread pool (`InferenceEnginePY.terminate`)."""
        self.engine.terminate()
