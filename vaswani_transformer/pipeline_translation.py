"""The "translation" pipeline for the Transformer of "Attention Is All You Need", shipped with the model.

transformers 5.x removed its built-in translation pipeline (`pipeline("translation")` raises `KeyError`, "The task
translation has been removed from transformers"). A model can still carry its own pipeline: `config.custom_pipelines`
maps a task name to a class in a file saved beside the weights, and `pipeline(task, model=..., trust_remote_code=True)`
loads that class with the model's remote code (transformers `pipelines/__init__.py`, `pipeline()`, "custom_tasks";
docs: "Adding a custom pipeline"). This module is that file:

    from transformers import pipeline

    translator = pipeline("translation", model="outputs/multi30k_en_de_cpu", trust_remote_code=True)
    translator("A man is riding a bicycle.")  # [{"translation_text": "Ein Mann fährt Fahrrad."}]

`save_translation_pipeline(model_dir)` adds it to a directory written by `save_pretrained` (it records the task in
`config.json` and copies this file); `TranslationPipeline(model=..., tokenizer=...).save_pretrained(dir)` writes model,
tokenizer and pipeline in one go, through transformers' own `Pipeline.save_pretrained`. Both give the same files.

The output format is that of transformers 4.x `TranslationPipeline` (`Text2TextGenerationPipeline`): a string gives a
list with one dict per returned sequence, `[{"translation_text": str}]`; a list of strings gives one such list per
input, flattened to one dict per input when each input has exactly one translation (`num_return_sequences=1`). An
empty or whitespace-only input translates to "" without reaching the model.

This file imports only the standard library, torch and transformers: it runs as remote code where the
`vaswani_transformer` package is not installed.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .batching_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from .decoding_vaswani_transformer import generated_labels, score


__all__ = [
    "TRANSLATION_TASK",
    "TRUNCATION_WARNING",
    "TranslationPipeline",
    "save_translation_pipeline",
    "translation_custom_pipelines",
]

logger = logging.getLogger(__name__)

# The task name under which the pipeline is registered and recorded in `config.custom_pipelines`.
TRANSLATION_TASK = "translation"
# Logged for each source cut to `max_source_length` (%-arguments: its length, the limit, the limit); the CTranslate2
# `export.Translator` logs the same.
TRUNCATION_WARNING = (
    "Input of %d tokens is longer than max_source_length=%d tokens; truncated to %d tokens "
    "(pass max_source_length=... to raise the limit, or truncation=False)."
)


class TranslationPipeline(Pipeline):
    """Translate text with an encoder-decoder model's `generate()`: tokenize, generate, decode (§6.1 decoding).

    Follows transformers 4.x `TranslationPipeline`, rewritten on the v5 `Pipeline` API (`_sanitize_parameters`,
    `preprocess`, `_forward`, `postprocess`; generation parameters merged by `_generate_kwargs_for_call`). Works on
    transformers 5.4 and later (see `_generate_kwargs_for_call` for the difference between 5.4-5.19 and 5.20+).

    Call arguments (also accepted by the constructor, where they become defaults for every call):
        inputs: a string, or a list of strings. An empty or whitespace-only string gives `num_return_sequences`
            empty translations (`""`, and a length-0 `translation_token_ids`) and is not sent to the model.
        batch_size: sentences per `generate()` call at most (default: no limit but `max_tokens`). The sentences of
            a list are translated longest first, in batches of at most `max_tokens` padded source tokens
            (`length_sorted_batches`, as fairseq and eole batch: little padding, beams that end together), right-padded
            with the tokenizer's pad id; the results come back in input order.
        max_tokens: padded source tokens (sentences x longest, `</s>` included) per `generate()` call (default
            `DEFAULT_MAX_TOKENS`, 4096; see `batching_vaswani_transformer` for why).
        truncation: cut inputs longer than `max_source_length` tokens (default True), logging a warning that names
            both lengths; with False, long inputs are passed whole.
        max_source_length: the truncation limit in tokens, `</s>` included (default: `tokenizer.model_max_length`).
        return_text: return `translation_text` (decoded, special tokens skipped; default True).
        return_tensors: return `translation_token_ids`, the generated ids as a 1-D `torch.LongTensor` (default False).
        return_scores: return `score`, each translation's log-probability as beam search ranks it: sum of log p(y_t
            | y_<t, x) over its tokens (`</s>` included) / length ** length_penalty (the generation config's, or the
            call's), by a teacher-forced pass over the output (`decoding_vaswani_transformer.score`; default False).
            With `num_return_sequences=n` (and `num_beams >= n`), the n best, best first: the n-best list.
        clean_up_tokenization_spaces: passed to `tokenizer.decode` (default: the tokenizer's own setting).
        **generate_kwargs: any `generate()` parameter (`num_beams`, `max_new_tokens`, `length_penalty`,
            `num_return_sequences`, `do_sample`, `generation_config`, ...). Unset ones come from the model's
            `generation_config` (a model trained by `training/train.py`: beam 4, length penalty 0.6, §6.1).

    Returns:
        For a string: a list of `num_return_sequences` dicts `{"translation_text": str}` (and/or
        `{"translation_token_ids": tensor}`, `{"score": float}`). For a list of strings: a list with one entry per
        input, in input order: the dict itself when `num_return_sequences == 1` (4.x behaviour), else the list of
        dicts. An empty input's translations score 0.0.

    `score(sources, targets)` scores given translations instead (forced decoding).

    Raises:
        ValueError: at construction, if the model is not an encoder-decoder that can generate, no tokenizer is given,
            or the tokenizer's vocabulary holds only special tokens (an untrained tokenizer, which would encode every
            word as its unknown token); at call time, if an input is neither a string nor a list of strings (naming
            its type), or if `max_source_length`, `max_tokens` or `batch_size` is not a positive integer.
    """

    _pipeline_calls_generate = True
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False
    # No `_default_generation_config`: every unset generation parameter comes from the model's generation_config.
    # (Without it, transformers 5.4-5.10 use an empty GenerationConfig(), later releases None; both add nothing.
    # Setting it to None would break the older releases, whose `Pipeline.__init__` reads its `max_new_tokens`.)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not (getattr(self.model.config, "is_encoder_decoder", False) and self.model.can_generate()):
            raise ValueError(
                "TranslationPipeline needs an encoder-decoder model that can generate; "
                f"got {type(self.model).__name__}"
            )
        if self.tokenizer is None:
            raise ValueError("TranslationPipeline needs a tokenizer (pass tokenizer=... or save one with the model)")
        vocab = self.tokenizer.get_vocab()
        if set(vocab) <= set(self.tokenizer.all_special_tokens):
            raise ValueError(
                f"TranslationPipeline needs a trained tokenizer; {type(self.tokenizer).__name__} has only special "
                f"tokens ({' '.join(sorted(vocab, key=vocab.get))}) in its vocabulary, so every word would be encoded "
                f"as {self.tokenizer.unk_token} and every translation would be empty"
            )

    def _sanitize_parameters(
        self,
        truncation: bool | None = None,
        max_source_length: int | None = None,
        max_tokens: int | None = None,
        return_text: bool | None = None,
        return_tensors: bool | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        return_scores: bool | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        """Split call/constructor arguments into (preprocess, forward = generate, postprocess) parameters."""
        preprocess_params: dict[str, Any] = {}
        if truncation is not None:
            preprocess_params["truncation"] = truncation
        for name, value in (("max_source_length", max_source_length), ("max_tokens", max_tokens)):
            if value is not None:
                preprocess_params[name] = _positive_int(name, value)  # max_tokens: taken out by `_translate_sorted`
        postprocess_params: dict[str, Any] = {}
        if return_text is not None:
            postprocess_params["return_text"] = return_text
        if return_tensors is not None:
            postprocess_params["return_tensors"] = return_tensors
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        if return_scores is not None:
            generate_kwargs["return_scores"] = return_scores  # computed in `_forward`, which has the model
        return preprocess_params, generate_kwargs, postprocess_params

    def __call__(
        self, inputs: str | list[str], num_workers: int | None = None, batch_size: int | None = None, **kwargs: Any
    ) -> list[dict] | list[list[dict]]:
        """Translate `inputs` (see the class docstring for arguments, return value and errors).

        The non-blank inputs go through `Pipeline.__call__` as one list; each blank one gets `_blank_translations`.
        """
        if isinstance(inputs, list) and not all(isinstance(text, str) for text in inputs):
            bad = next(text for text in inputs if not isinstance(text, str))
            raise ValueError(f"TranslationPipeline inputs must be strings; the list holds a {type(bad).__name__}")
        if not isinstance(inputs, (str, list)):
            raise ValueError(f"TranslationPipeline takes a string or a list of strings, got {type(inputs).__name__}")
        texts = [inputs] if isinstance(inputs, str) else inputs
        to_translate = [text for text in texts if text.strip()]
        translated = iter(self._translate_sorted(to_translate, num_workers, batch_size, **kwargs))
        blank = self._blank_translations(**kwargs) if len(to_translate) < len(texts) else []
        result = [next(translated) if text.strip() else [dict(record) for record in blank] for text in texts]
        if isinstance(inputs, str):
            return result[0]
        if all(len(translations) == 1 for translations in result):
            return [translations[0] for translations in result]  # 4.x: one dict per input
        return result

    def _translate_sorted(
        self, texts: list[str], num_workers: int | None, batch_size: int | None, **kwargs: Any
    ) -> list[list[dict]]:
        """`postprocess` records of each of `texts` (non-blank), in their order, translated longest first in batches
        of at most `max_tokens` padded source tokens and `batch_size` sentences (`length_sorted_batches`).

        Each batch runs through `Pipeline.get_iterator` (preprocess, pad, forward, postprocess), with the call's
        parameters merged over the constructor's as `Pipeline.__call__` merges them.

        Raises:
            ValueError: if `batch_size` or `max_tokens` is not a positive integer.
        """
        if batch_size is not None:
            _positive_int("batch_size", batch_size)
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        max_tokens = preprocess_params.pop("max_tokens", DEFAULT_MAX_TOKENS)
        limit = preprocess_params.get("max_source_length") or self.tokenizer.model_max_length
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]] if texts else []
        if preprocess_params.get("truncation", True):
            lengths = [min(length, limit) for length in lengths]
        num_workers = num_workers if num_workers is not None else self._num_workers or 0
        batch_size = batch_size if batch_size is not None else self._batch_size
        results: list[list[dict]] = [[] for _ in texts]
        for indices in length_sorted_batches(lengths, max_tokens, batch_size):
            records = self.get_iterator(
                [texts[i] for i in indices],
                num_workers,
                len(indices),
                preprocess_params,
                forward_params,
                postprocess_params,
            )
            for index, record in zip(indices, records, strict=True):
                results[index] = record
        return results

    def score(
        self,
        sources: list[str],
        targets: list[str],
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int | None = None,
        max_source_length: int | None = None,
        length_penalty: float | None = None,
    ) -> list[dict[str, Any]]:
        """Forced decoding of source/target pairs: how likely the model finds each given translation.

        Sources are tokenized and truncated as `preprocess` does, targets as `text_target` (ending with `</s>`),
        and scored by `decoding_vaswani_transformer.score` in length-sorted batches of at most `max_tokens` padded
        source tokens and `batch_size` pairs (`length_sorted_batches`).

        Returns:
            One dict per pair, in order: `score` (float: sum of the token log-probabilities / length **
            length_penalty, the generation config's unless given, as beam search ranks hypotheses),
            `token_log_probs` (list of floats, natural log, one per target token, `</s>` included) and `tokens`
            (the target tokens, strings).
        Raises:
            ValueError: if `sources` and `targets` differ in length, or `max_tokens`/`batch_size` is not a
                positive integer.
        """
        if len(sources) != len(targets):
            raise ValueError(f"score needs one target per source, got {len(sources)} sources, {len(targets)} targets")
        _positive_int("max_tokens", max_tokens)
        limit = max_source_length or self.tokenizer.model_max_length
        source_ids = self.tokenizer(list(sources), truncation=True, max_length=limit)["input_ids"] if sources else []
        target_ids = self.tokenizer(text_target=list(targets))["input_ids"] if targets else []
        results: list[dict[str, Any]] = [{} for _ in sources]
        for indices in length_sorted_batches([len(ids) for ids in source_ids], max_tokens, batch_size):
            batch = self.tokenizer.pad({"input_ids": [source_ids[i] for i in indices]}, return_tensors="pt")
            longest = max(len(target_ids[i]) for i in indices)
            labels = torch.tensor([target_ids[i] + [-100] * (longest - len(target_ids[i])) for i in indices])
            with torch.no_grad():
                scored = score(
                    self.model, batch["input_ids"].to(self.device), labels.to(self.device),
                    batch["attention_mask"].to(self.device), length_penalty=length_penalty,
                )  # fmt: skip
            for row, index in enumerate(indices):
                length = len(target_ids[index])
                results[index] = {
                    "score": float(scored.sequences_scores[row]),
                    "token_log_probs": scored.token_log_probs[row, :length].tolist(),
                    "tokens": self.tokenizer.convert_ids_to_tokens(target_ids[index]),
                }
        return results

    def _blank_translations(self, **kwargs: Any) -> list[dict[str, Any]]:
        """The records of an empty or whitespace-only input, built by `postprocess` without running the model.

        Args:
            **kwargs: the call's arguments (as for `__call__`), on top of the constructor's.
        Returns:
            `num_return_sequences` records (as generation would resolve it: call, constructor, the model's
            `generation_config`), each with `translation_text` "" and/or a length-0 `translation_token_ids`.
        """
        _, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        forward_params = {**self._forward_params, **forward_params}
        return_scores = forward_params.pop("return_scores", False)
        generate_kwargs = self._generate_kwargs_for_call(forward_params)
        generation_config = generate_kwargs.get("generation_config") or self.model.generation_config
        returns = generate_kwargs.get("num_return_sequences") or generation_config.num_return_sequences or 1
        outputs = {"output_ids": torch.zeros(1, returns, 0, dtype=torch.long)}  # (1, returns, out_len = 0)
        if return_scores:
            outputs["scores"] = torch.zeros(1, returns)
        return self.postprocess(outputs, **{**self._postprocess_params, **postprocess_params})

    def _generate_kwargs_for_call(self, generate_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The `generate()` kwargs of one call: its generation parameters on top of the constructor's, on top of the
        model's `generation_config`.

        transformers 5.20 and later keep the constructor's generation parameters apart and merge them on each call
        in `Pipeline._prepare_generate_kwargs`. 5.4-5.19 have no such method: their `Pipeline.__init__` folds the
        constructor's parameters and the model's `generation_config` into `self.generation_config`, which each call
        then starts from (as their text-generation pipeline does); the call's parameters go into a copy of it, since
        generate() warns when it gets a `generation_config` together with generation parameters. A call that passes
        its own `generation_config` gets it as it is.

        Args:
            generate_kwargs: the call's generation parameters (the forward parameters of `_sanitize_parameters`).
        Returns:
            The keyword arguments for `model.generate` (besides the inputs).
        """
        if hasattr(self, "_prepare_generate_kwargs"):  # transformers >= 5.20
            return self._prepare_generate_kwargs(generate_kwargs)
        if "generation_config" in generate_kwargs:
            return generate_kwargs
        generation_config = copy.deepcopy(self.generation_config)
        model_kwargs = generation_config.update(**generate_kwargs)  # the kwargs that are not generation parameters
        return {**model_kwargs, "generation_config": generation_config}

    def preprocess(
        self, text: str, truncation: bool = True, max_source_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """One sentence -> `input_ids`, `attention_mask` of shape `(1, src_len)`, ending in `</s>`."""
        limit = max_source_length or self.tokenizer.model_max_length
        encoded = self.tokenizer(text, return_tensors="pt")  # (1, src_len)
        length = encoded["input_ids"].shape[1]
        if truncation and length > limit:
            logger.warning(TRUNCATION_WARNING, length, limit, limit)
            encoded = self.tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")  # (1, limit)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _forward(self, model_inputs: dict[str, torch.Tensor], **generate_kwargs: Any) -> dict[str, torch.Tensor]:
        """`generate()` on `(batch, src_len)` inputs -> `output_ids` `(batch, num_return_sequences, out_len)`, and
        with `return_scores` their `scores` `(batch, num_return_sequences)` (`_sequence_scores`)."""
        batch = model_inputs["input_ids"].shape[0]
        return_scores = generate_kwargs.pop("return_scores", False)
        generate_kwargs = self._generate_kwargs_for_call(generate_kwargs)
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)  # (batch * returns, out_len)
        if not isinstance(output_ids, torch.Tensor):  # return_dict_in_generate=True
            output_ids = output_ids.sequences
        outputs = {"output_ids": output_ids.reshape(batch, -1, output_ids.shape[-1])}  # (batch, returns, out_len)
        if return_scores:
            scores = self._sequence_scores(model_inputs, output_ids, generate_kwargs)  # (batch * returns,)
            outputs["scores"] = scores.reshape(batch, -1)
        return outputs

    def _sequence_scores(
        self, model_inputs: dict[str, torch.Tensor], output_ids: torch.Tensor, generate_kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """`(batch * returns,)` length-normalised log-probabilities of `(batch * returns, out_len)` generated ids
        (decoder start token first; tokens after the first `</s>` are padding), as beam search scores them, with
        the call's generation config (`decoding_vaswani_transformer.score`)."""
        generation_config = copy.deepcopy(generate_kwargs.get("generation_config") or self.model.generation_config)
        generation_config.update(
            **{key: value for key, value in generate_kwargs.items() if key != "generation_config"}
        )
        labels = generated_labels(output_ids, generation_config.eos_token_id)  # (rows, out_len - 1)
        returns = output_ids.shape[0] // model_inputs["input_ids"].shape[0]
        sources = {name: tensor.repeat_interleave(returns, dim=0) for name, tensor in model_inputs.items()}
        scored = score(self.model, sources["input_ids"], labels, sources.get("attention_mask"), generation_config)
        return scored.sequences_scores

    def postprocess(
        self,
        model_outputs: dict[str, torch.Tensor],
        return_text: bool = True,
        return_tensors: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[dict[str, Any]]:
        """`(1, returns, out_len)` ids of one sentence (and `(1, returns)` scores) -> a dict per returned sequence."""
        records = []
        for index, output_ids in enumerate(model_outputs["output_ids"][0]):  # (out_len,)
            record: dict[str, Any] = {}
            if return_tensors:
                record["translation_token_ids"] = output_ids
            if return_text:
                record["translation_text"] = self.tokenizer.decode(
                    output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
                )
            if "scores" in model_outputs:
                record["score"] = float(model_outputs["scores"][0, index])
            records.append(record)
        return records


def _positive_int(name: str, value: Any) -> int:
    """`value` if it is an int >= 1 (not a bool). Raises ValueError naming the argument `name` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _same_pipeline(impl: Any) -> bool:
    """True if `impl` is this class, or this file loaded again (as remote code, under another module path)."""
    return getattr(impl, "__qualname__", None) == TranslationPipeline.__qualname__ and (
        impl.__module__.rsplit(".", 1)[-1] == TranslationPipeline.__module__.rsplit(".", 1)[-1]
    )


# Register the task (this also sets `TranslationPipeline._registered_impl`, which `save_pretrained` reads). A copy of
# this file registered earlier (the package, then the same file as remote code) is replaced without a warning.
if _same_pipeline(PIPELINE_REGISTRY.supported_tasks.get(TRANSLATION_TASK, {}).get("impl")):
    del PIPELINE_REGISTRY.supported_tasks[TRANSLATION_TASK]
PIPELINE_REGISTRY.register_pipeline(
    TRANSLATION_TASK, pipeline_class=TranslationPipeline, pt_model=AutoModelForSeq2SeqLM
)


def translation_custom_pipelines() -> dict[str, dict[str, Any]]:
    """The `config.custom_pipelines` entry that `Pipeline.save_pretrained` writes for this pipeline.

    Returns:
        `{"translation": {"impl": "pipeline_translation.TranslationPipeline", "pt": ["AutoModelForSeq2SeqLM"]}}`,
        built from `TranslationPipeline._registered_impl` exactly as transformers' `Pipeline.save_pretrained` does.
    """
    entries = {}
    for task, info in TranslationPipeline._registered_impl.items():
        entry = dict(info)
        entry["impl"] = f"{TranslationPipeline.__module__.split('.')[-1]}.{TranslationPipeline.__name__}"
        entry["pt"] = [model_class.__name__ for model_class in info["pt"]]
        entries[task] = entry
    return entries


def save_translation_pipeline(model_dir: str | Path) -> list[Path]:
    """Make a saved model directory loadable with `pipeline("translation", model=model_dir, trust_remote_code=True)`.

    Adds `custom_pipelines` (`translation_custom_pipelines()`) to `model_dir/config.json` and copies this file
    (`pipeline_translation.py`) beside it; the same two things `TranslationPipeline.save_pretrained` does, without
    loading or re-writing the weights. Idempotent.

    Args:
        model_dir: a directory written by `model.save_pretrained` (and `tokenizer.save_pretrained`).
    Returns:
        The two paths written: `config.json` and `pipeline_translation.py`.
    Raises:
        FileNotFoundError: if `model_dir/config.json` does not exist (naming the path).
        ValueError: if `config.json` is not a JSON object (naming the path).
    """
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} not found: save the model with save_pretrained({str(model_dir)!r}) first"
        )
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} does not hold a JSON object")
    config["custom_pipelines"] = translation_custom_pipelines()
    # Same layout as PreTrainedConfig.to_json_file: sorted keys, 2-space indent, trailing newline.
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    code_file = model_dir / Path(__file__).name
    if Path(__file__).resolve() != code_file.resolve():
        shutil.copyfile(__file__, code_file)
    return [config_file, code_file]
