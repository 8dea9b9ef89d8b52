"""Translate with a model written by `export_ctranslate2`, as the translation pipeline does, on CTranslate2.

`Translator` reads the exported directory (`conversion` describes what it holds) and translates text exactly as
`pipeline_translation.TranslationPipeline` does: same tokenization, truncation warning, batching and decoding; the
search is CTranslate2's C++ one, with the `translate_batch` options the export recorded from the model's
`generation_config.json`.

Needs `ctranslate2` (`pip install "vaswani_transformer[export]"`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..batching_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from ..convert import load_tokenizer
from ..pipeline_translation import TRUNCATION_WARNING, _positive_int
from .conversion import COMMAND, EXPORT_INFO_FILE, import_ctranslate2, vocabulary


__all__ = ["Translator"]

logger = logging.getLogger(__name__)


class Translator:
    """Translate text with a model written by `export_ctranslate2`, as the translation pipeline does.

    Tokenization, truncation (with the pipeline's warning), length-sorted batches of at most `max_tokens` padded
    source tokens (`length_sorted_batches`) and decoding (`skip_special_tokens=True`) are the pipeline's; the search
    is CTranslate2's, with the options the export recorded from `generation_config.json` (beam 4, length penalty 0.6
    for the paper's models).

        translator = Translator("outputs/multi30k_en_de_ct2")
        translator.translate(["A man is riding a bicycle."])  # ["Ein Mann fährt Fahrrad."]

    Args:
        model_dir: a directory written by `export_ctranslate2` / `vaswani-export-ct2`.
        device: "cpu", "cuda" or "auto" (CTranslate2's `device`).
        compute_type: CTranslate2's `compute_type` ("default": the exported weight type; "int8", "float32", ...).
        intra_threads: threads per translation (CTranslate2's `intra_threads`; 0: its default, all cores up to 4).
            Default on CPU: 1, with `inter_threads` = the cores this process may use: a throughput setting, each
            core translating its own batch (`benchmarks/deploy.py` measures it against the others). For the latency
            of one sentence at a time, pass `intra_threads=0, inter_threads=1`. On CUDA: 0 and 1.
        inter_threads: batches translated in parallel (CTranslate2's `inter_threads`; `generate` queues all of
            its batches at once).
        **kwargs: other `ctranslate2.Translator` arguments (`device_index`, `max_queued_batches`, ...).
    Raises:
        FileNotFoundError: if `model_dir` has no `vaswani_ctranslate2.json` (not written by the export).
        ValueError: if the tokenizer beside the model has more tokens than the exported vocabulary.
        ImportError: if ctranslate2 is not installed.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        device: str = "cpu",
        compute_type: str = "default",
        intra_threads: int | None = None,
        inter_threads: int | None = None,
        **kwargs: Any,
    ):
        ctranslate2 = import_ctranslate2()
        self.model_dir = model_dir = Path(model_dir)
        info_file = model_dir / EXPORT_INFO_FILE
        if not info_file.is_file():
            raise FileNotFoundError(
                f"{info_file} not found: {model_dir} was not written by {COMMAND} (export the model with it first)."
            )
        self.info = json.loads(info_file.read_text(encoding="utf-8"))
        self.max_positions: int = self.info["max_positions"]
        self.options: dict[str, Any] = self.info["translate_batch"]
        self.tokenizer = load_tokenizer(model_dir)  # ours, or the MarianTokenizer of a model converted from Marian
        tokens = vocabulary(self.tokenizer, self.info["vocab_size"])
        self.token_ids = {token: index for index, token in enumerate(tokens)}
        on_cpu = device == "cpu" or (device == "auto" and ctranslate2.get_cuda_device_count() == 0)
        if intra_threads is None:
            intra_threads = 1 if on_cpu else 0
        if inter_threads is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            inter_threads = cores if on_cpu else 1
        torch_threads = torch.get_num_threads()
        self.translator = ctranslate2.Translator(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            intra_threads=intra_threads,
            inter_threads=inter_threads,
            **kwargs,
        )
        # Loading sets the OpenMP thread count of the calling thread to `intra_threads`, which PyTorch in the same
        # process reads as its own: give PyTorch its count back.
        torch.set_num_threads(torch_threads)

    def _check_positions(self, length: int, what: str) -> None:
        if length > self.max_positions:
            raise ValueError(
                f"{what} of {length} tokens is longer than the exported positional table ({self.max_positions} "
                f"positions); export again with {COMMAND} --max_positions {length} or more."
            )

    def generate(
        self,
        input_ids: Sequence[Sequence[int]],
        num_beams: int | None = None,
        length_penalty: float | None = None,
        max_new_tokens: int | None = None,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        target_prefix: Sequence[Sequence[int]] | None = None,
        num_return_sequences: int | None = None,
        **options: Any,
    ) -> list[list[int]] | list[list[list[int]]]:
        """Translate token ids: CTranslate2's counterpart of `model.generate()`.

        Args:
            input_ids: one list of source ids per sentence, each ending with `</s>` (as the tokenizer gives them).
            num_beams, length_penalty, max_new_tokens: override the exported generation settings.
            max_tokens: padded source tokens per `translate_batch` call (sentences are sorted longest first;
                default `DEFAULT_MAX_TOKENS`, as the pipeline's).
            batch_size: sentences per call at most (default: no limit besides `max_tokens`).
            target_prefix: forced first target ids per sentence (CTranslate2's `target_prefix`; `generate`'s
                `target_prefix`), an empty list for none; they begin the returned ids.
            num_return_sequences: return that many hypotheses per sentence, best first (CTranslate2's
                `num_hypotheses`; at most the beam size).
            **options: further `ctranslate2.Translator.translate_batch` arguments (e.g. `sampling_topk`).
        Returns:
            The generated ids of each sentence, in input order, ending with `</s>` unless `max_new_tokens` cut them
            (what `generate()` returns after its decoder start token); with `num_return_sequences`, a list of that
            many such lists per sentence.
        Raises:
            ValueError: if a source, or `max_new_tokens`, exceeds the positional table, or `max_tokens` or
                `batch_size` is not a positive integer.
        """
        max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else _positive_int("max_tokens", max_tokens)
        if batch_size is not None:
            _positive_int("batch_size", batch_size)
        options = {**self.options, **options}
        for name, value in (
            ("beam_size", num_beams),
            ("length_penalty", length_penalty),
            ("max_decoding_length", max_new_tokens),
        ):
            if value is not None:
                options[name] = value
        if num_return_sequences is not None:
            options["num_hypotheses"] = _positive_int("num_return_sequences", num_return_sequences)
        self._check_positions(options["max_decoding_length"], "max_new_tokens: an output")
        for ids in input_ids:
            self._check_positions(len(ids), "A source")
        outputs: list = [[] for _ in input_ids]
        # Every batch is queued at once, so that `inter_threads` translators work on several batches in parallel.
        pending = []
        for indices in length_sorted_batches([len(ids) for ids in input_ids], max_tokens, batch_size):
            sources = [self.tokenizer.convert_ids_to_tokens(list(input_ids[i])) for i in indices]
            if target_prefix is not None:
                options["target_prefix"] = [
                    self.tokenizer.convert_ids_to_tokens(list(target_prefix[i])) for i in indices
                ]
            pending.append((indices, self.translator.translate_batch(sources, asynchronous=True, **options)))
        for indices, results in pending:
            for index, result in zip(indices, results, strict=True):
                hypotheses = [[self.token_ids[token] for token in tokens] for tokens in result.result().hypotheses]
                outputs[index] = hypotheses if num_return_sequences is not None else hypotheses[0]
        return outputs

    def encode(self, texts: Sequence[str], truncation: bool = True, max_source_length: int | None = None):
        """Source ids of `texts` as the pipeline's `preprocess` makes them: ending with `</s>`, and cut to
        `max_source_length` tokens (default: the tokenizer's `model_max_length`) with the pipeline's warning.

        Returns:
            One list of token ids per text, in order (with `truncation=False`, as long as the text makes it).
        """
        limit = max_source_length or self.tokenizer.model_max_length
        encoded = self.tokenizer(list(texts))["input_ids"] if texts else []
        for index, ids in enumerate(encoded):
            if truncation and len(ids) > limit:
                logger.warning(TRUNCATION_WARNING, len(ids), limit, limit)
                encoded[index] = self.tokenizer(texts[index], truncation=True, max_length=limit)["input_ids"]
        return encoded

    def translate(
        self,
        texts: str | Sequence[str],
        truncation: bool = True,
        max_source_length: int | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str | list[str]:
        """Translate one text or a list of texts; an empty or whitespace-only text gives "" without the model.

        Args:
            texts: a string, or a list of strings.
            truncation, max_source_length: as the pipeline's (see `encode`).
            clean_up_tokenization_spaces: passed to `tokenizer.decode` (default: the tokenizer's own setting).
            **kwargs: `generate` arguments (`num_beams`, `max_new_tokens`, `max_tokens`, `batch_size`, ...).
        Returns:
            The translation (for a string) or the translations in input order.
        Raises:
            ValueError: as `generate`, and for an item of `texts` that is not a string (names its index).
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{index}] is a {type(text).__name__}, not a string: {text!r}")
        indices = [index for index, text in enumerate(texts) if text.strip()]
        if max_source_length is not None:
            _positive_int("max_source_length", max_source_length)
        encoded = self.encode([texts[index] for index in indices], truncation, max_source_length)
        translations = [""] * len(texts)
        for index, ids in zip(indices, self.generate(encoded, **kwargs), strict=True):
            translations[index] = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
            )
        return translations[0] if single else translations

    def score(self, source_ids: Sequence[Sequence[int]], target_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-probabilities (natural log) of each target token given the source and the tokens before it.

        Args:
            source_ids: one list of source ids per sentence (ending with `</s>`).
            target_ids: one list of target ids per sentence, ending with `</s>`, without the decoder start token
                (the tokenizer's `text_target` ids, the model's `labels`).
        Returns:
            One list of `len(target)` floats per sentence: log p(y_t | y_<t, x), as the model's log-softmax of
            its logits at each `labels` position.
        Raises:
            ValueError: if a source or a target exceeds the positional table, or a target does not end with `</s>`.
        """
        eos = self.tokenizer.eos_token
        sources, targets = [], []
        for source, target in zip(source_ids, target_ids, strict=True):
            self._check_positions(len(source), "A source")
            self._check_positions(len(target), "A target")
            tokens = self.tokenizer.convert_ids_to_tokens(list(target))
            if not tokens or tokens[-1] != eos:
                raise ValueError(f"A target must end with {eos}, got {tokens[-3:]}.")
            sources.append(self.tokenizer.convert_ids_to_tokens(list(source)))
            targets.append(tokens[:-1])  # CTranslate2 scores the end token itself
        results = self.translator.score_batch(sources, targets, max_input_length=0)
        return [list(result.log_probs) for result in results]
