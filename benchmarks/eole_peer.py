"""eole 0.6.4 (OpenNMT's PyTorch successor) as a translation peer holding our weights: `EoleTranslator` loads a
directory written by `benchmarks.eole_convert.convert_to_eole` once into eole's in-process engine
(`eole.inference_engine.InferenceEnginePY`) and translates token ids with eole's batching, beam search and length
penalty. For a post-norm model it gives eole's pre-norm decoder layers the paper's order
(`PostNormTransformerDecoderLayer`), the only change to eole's objects (why: benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .eole_convert import EOLE_VERSION, MARKER_FILE, convert_to_eole, eole_available, quiet_eole, require_eole


__all__ = ["EOLE_VERSION", "EoleTranslator", "convert_to_eole", "eole_available"]

LENGTH_PENALTIES = ("avg", "wu", "none")  # eole.config.inference.DecodingConfig.length_penalty


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


# Post-norm decoder layer ------------------------------------------------------------------------------------------


@functools.cache
def _post_norm_decoder_layer_class() -> type:
    """`PostNormTransformerDecoderLayer`, built on first use so that eole is imported only then."""
    from eole.decoders.transformer import TransformerDecoderLayer

    class PostNormTransformerDecoderLayer(TransformerDecoderLayer):
        """§3.1 decoder layer on eole's sub-modules, post-norm: each sub-layer's output is
        LayerNorm(x + Sublayer(x)). The LayerNorms are eole's, named as `eole_convert._eole_weights` fills them:
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
        require_eole()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r}; 'cpu' or 'cuda'")
        eole_dir = Path(eole_dir)
        if not (eole_dir / MARKER_FILE).is_file():
            raise FileNotFoundError(f"{eole_dir / MARKER_FILE} is missing: write the directory with convert_to_eole")
        marker = json.loads((eole_dir / MARKER_FILE).read_text(encoding="utf-8"))
        with quiet_eole():
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
