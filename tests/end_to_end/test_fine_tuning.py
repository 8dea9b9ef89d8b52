"""Fine-tuning (`--model_name_or_path`): a tiny MarianMT model with a SentencePiece tokenizer trained here, and a run
of ours, continued by `training/train.py` as users run it.

The MarianMT reference is transformers' own `MarianMTModel`: step 0's training loss must be the label-smoothed
cross-entropy of Marian's logits on the same batch, within fp32 noise (the distance of Marian's fp32 loss from its fp64
loss). The fine-tuned Marian model must then load, translate, export to CTranslate2 and carry a model card like any
run's model. Refusals (another architecture, another vocabulary, no learning rate) come before any training.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from conftest import read_multi30k, train_in_process


pytestmark = pytest.mark.slow  # whole training runs (CI runs them)

TRAIN_PAIRS = 16  # one token batch: step 0's batch is all of them


def train_sentencepiece(texts: list[str], vocab_size: int) -> bytes:
    """A SentencePiece unigram model (what Marian's source.spm / target.spm files hold) learnt from `texts`."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram", minloglevel=2
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory, multi30k_dir) -> Path:
    """A tiny MarianMTModel and its MarianTokenizer, saved as OPUS-MT models are: source.spm and target.spm learnt on
    300 Multi30k sentences of each language, one vocab.json shared by both (</s> 0, <unk> 1, <pad> last)."""
    import sentencepiece
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder = tmp_path_factory.mktemp("tiny_marian")
    pieces = []
    for side, lang in (("source", "en"), ("target", "de")):
        model = train_sentencepiece(read_multi30k(multi30k_dir, "train", lang, 300), vocab_size=150)
        (folder / f"{side}.spm").write_bytes(model)
        processor = sentencepiece.SentencePieceProcessor(model_proto=model)
        special = (processor.is_control, processor.is_unknown)  # <s>, </s>, <unk>: vocab.json has its own
        pieces += [processor.id_to_piece(i) for i in range(len(processor)) if not any(is_(i) for is_ in special)]
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True,
        pad_token_id=vocab["<pad>"], eos_token_id=0, decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    marian = MarianMTModel(config)
    marian.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def flat_dataset(tmp_path_factory, multi30k_dir) -> Path:
    """Multi30k pairs as a local dataset folder in bentrevett/multi30k's layout: data/{train,validation,test}.parquet
    with one text column per language (`en`, `de`), found by the language codes."""
    import datasets

    folder = tmp_path_factory.mktemp("flat_multi30k")
    for split, stem, count in (("train", "train", 64), ("validation", "val", 8), ("test", "test_2016_flickr", 8)):
        columns = {lang: read_multi30k(multi30k_dir, stem, lang, count) for lang in ("en", "de")}
        datasets.Dataset.from_dict(columns).to_parquet(str(folder / "data" / f"{split}.parquet"))
    return folder


def marian_args(marian_dir: Path, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        *f"--model_name_or_path {marian_dir} --dataset_name {dataset} --output_dir {output_dir}".split(),
        *f"--max_train_samples {TRAIN_PAIRS} --max_tokens 4096 --max_steps 2 --logging_steps 1".split(),
        *"--learning_rate 1e-3 --warmup_steps 2 --label_smoothing 0.1 --seed 3 --target_tokens_per_step 4096".split(),
        *"--max_eval_samples 8 --max_test_samples 8 --eval_batch_size 8".split(),
        *extra,
    ]


@pytest.fixture(scope="module")
def marian_run(marian_dir, flat_dataset, tmp_path_factory) -> Path:
    """Two steps of fine-tuning the tiny Marian model on 16 Multi30k pairs, eps_ls 0.1, validation at the end."""
    out = tmp_path_factory.mktemp("marian_run") / "run"
    train_in_process(marian_args(marian_dir, flat_dataset, out))
    return out


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_step_0_loss_is_marians_own_loss(marian_run, marian_dir, multi30k_dir):
    from transformers import MarianMTModel, MarianTokenizer

    first = next(record for record in read_log(marian_run) if "loss" in record)
    assert first["step"] == 1 and first["epoch"] == 1.0  # the one batch of all 16 pairs, before any update

    marian = MarianMTModel.from_pretrained(marian_dir).eval()
    tokenizer = MarianTokenizer.from_pretrained(marian_dir)
    sources = read_multi30k(multi30k_dir, "train", "en", TRAIN_PAIRS)
    targets = read_multi30k(multi30k_dir, "train", "de", TRAIN_PAIRS)
    batch = tokenizer(sources, text_target=targets, padding=True, return_tensors="pt")
    batch["labels"] = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)

    def smoothed_loss(model) -> torch.Tensor:
        """§5.4 on Marian's logits, computed here with torch's own label smoothing."""
        with torch.no_grad():
            output = model(**batch)
        logits = output.logits.reshape(-1, output.logits.shape[-1])  # (batch * tgt_len, vocab)
        labels = batch["labels"].reshape(-1)
        # Marian's own `labels` loss is the unsmoothed cross-entropy of the same logits.
        torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(logits, labels))
        return torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)

    reference = smoothed_loss(marian).item()
    noise = abs(reference - smoothed_loss(marian.double()).item())  # fp32 noise of this loss
    tolerance = 4 * max(noise, torch.finfo(torch.float32).eps * reference)
    assert abs(first["loss"] - reference) <= tolerance, (first["loss"], reference, noise)


def test_fine_tuned_marian_loads_translates_exports_and_has_a_card(marian_run, tmp_path):
    import ctranslate2
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, MarianTokenizer

    from vaswani_transformer.export import Translator
    from vaswani_transformer.export.conversion import export_ctranslate2

    model = AutoModelForSeq2SeqLM.from_pretrained(marian_run, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(marian_run)
    assert isinstance(tokenizer, MarianTokenizer)  # its own SentencePiece tokenizer, saved with it
    assert model.config.positional_encoding_layout == "concatenated" and model.config.label_smoothing == 0.1
    sentences = ["A dog runs on the beach.", "Two men are playing football."]
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    # Greedy, without Marian's forced </s> at the length limit (a setting the export does not carry, and warns about).
    generated = model.generate(**encoded, num_beams=1, max_new_tokens=12, forced_eos_token_id=None)  # (batch, length)
    assert generated.shape[0] == 2 and generated.shape[1] > 1

    ct2_dir = export_ctranslate2(marian_run, tmp_path / "ct2")
    translator = ctranslate2.Translator(str(ct2_dir))
    source_tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(sentences)["input_ids"]]
    results = translator.translate_batch(source_tokens, beam_size=1, max_decoding_length=12)
    for result, ids in zip(results, generated.tolist(), strict=True):
        ours = tokenizer.convert_ids_to_tokens([i for i in ids[1:] if i not in (tokenizer.pad_token_id, 0)])
        assert len(ours) > 3 and result.hypotheses[0] == ours
    exported = Translator(ct2_dir)  # the package's CTranslate2 front end, with Marian's tokenizer
    assert isinstance(exported.tokenizer, MarianTokenizer)
    assert all(exported.translate(sentences))

    card = (marian_run / "README.md").read_text()
    assert "vaswani_transformer" in card and "| test | 8 |" in card  # the dataset's test split, scored
    results = json.loads((marian_run / "train_results.json").read_text())
    assert results["stop_reason"] == "max_steps 2"
    assert results["effective_batch"] == {
        "max_tokens": 4096, "num_processes": 1, "gradient_accumulation_steps": 1, "tokens_per_step": 4096
    }  # fmt: skip
    log = read_log(marian_run)
    assert {"step": 2, "stop_reason": "max_steps 2"} in log
    assert [record["step"] for record in log if "eval_loss" in record] == [2]  # --eval_steps 0: at the end only


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layer_norm_position", "pre"], r"--layer_norm_position pre contradicts .* layer_norm_position='post'"),
        (["--d_model", "32"], r"--d_model 32 contradicts the model being fine-tuned .*d_model=16"),
        (["--learning_rate", "0"], r"--learning_rate 0.0: give a positive peak rate"),
    ],
    ids=["pre_norm_into_post_norm", "architecture", "learning_rate"],
)
def test_what_cannot_be_fine_tuned_is_refused(marian_dir, flat_dataset, tmp_path, extra, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train_in_process(marian_args(marian_dir, flat_dataset, out, *extra))
    assert not out.exists()


def test_another_vocabulary_and_no_learning_rate_are_refused(marian_dir, flat_dataset, small_tokenizer, tmp_path):
    small_tokenizer.save_pretrained(tmp_path / "bpe")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"vocabulary mismatch: the tokenizer of .*bpe has 1000 tokens"):
        train_in_process(marian_args(marian_dir, flat_dataset, out, "--tokenizer_name", str(tmp_path / "bpe")))
    argv = marian_args(marian_dir, flat_dataset, out)
    del argv[argv.index("--learning_rate") : argv.index("--learning_rate") + 2]
    with pytest.raises(ValueError, match="--learning_rate is needed to fine-tune"):
        train_in_process(argv)
    assert not out.exists()


def test_early_stopping_ends_the_run_and_records_why(marian_dir, flat_dataset, tmp_path):
    """A learning rate far too high: validation loss only rises after the first validation, so patience 1 stops
    the run at the second, and train_results.json and log.jsonl say why."""
    out = tmp_path / "run"
    extra = "--eval_steps 1 --early_stopping_patience 1 --metric_for_best_model loss --max_steps 20".split()
    argv = marian_args(marian_dir, flat_dataset, out, *extra)
    argv[argv.index("--learning_rate") + 1] = "5"
    train_in_process(argv)
    results = json.loads((out / "train_results.json").read_text())
    assert results["step"] == 2
    assert results["stop_reason"].startswith("early_stopping_patience 1: eval_loss did not improve on")
    log = read_log(out)
    losses = [record["eval_loss"] for record in log if "eval_loss" in record]
    assert len(losses) == 2 and losses[1] > losses[0]
    assert {"step": 2, "stop_reason": results["stop_reason"]} in log


# A run of ours with the multi30k_en_de_cpu preset's model (d_model 256, 3+3 layers), cut short for a test.
SHORT = "--max_train_samples 200 --max_eval_samples 8 --max_test_samples 8 --eval_batch_size 8 --eval_steps 0".split()


@pytest.fixture(scope="module")
def preset_run(multi30k_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("preset_run") / "run"
    extra = "--vocab_size 1000 --max_steps 3 --save_minutes 0 --average_last_k 0".split()
    train_in_process(["--config", "multi30k_en_de_cpu", "--output_dir", str(out), *SHORT, *extra])
    return out


def test_fine_tuning_our_run_with_its_preset_continues_eq3(preset_run, tmp_path):
    """The command the fine-tuning measurement runs (`--config multi30k_en_de_cpu --model_name_or_path RUN --max_steps
    N --seed 7`), shortened: the run's architecture and generation config are kept, and the peak learning rate is
    the rate Eq. 3 had reached at the run's last step, reached after the preset's warmup."""
    out = tmp_path / "fine_tuned"
    command = (
        f"--config multi30k_en_de_cpu --model_name_or_path {preset_run} --max_steps 2 --seed 7 --output_dir {out}"
    )
    train_in_process([*command.split(), *SHORT, "--logging_steps", "1"])

    first = next(record for record in read_log(out) if "lr" in record)
    peak = 256**-0.5 * min(3**-0.5, 3 * 800**-1.5)  # Eq. 3 at the first run's last step (3), d_model 256, warmup 800
    assert first["lr"] == pytest.approx(peak * 1 / 800, rel=1e-9)  # Eq. 3's shape at step 1 of 800 warmup steps
    for name in ("config.json", "generation_config.json"):
        before, after = (json.loads((run / name).read_text()) for run in (preset_run, out))
        assert {k: v for k, v in after.items() if k != "auto_map"} == {
            k: v for k, v in before.items() if k != "auto_map"
        }
    results = json.loads((out / "train_results.json").read_text())
    assert results["stop_reason"] == "max_steps 2" and results["effective_batch"]["tokens_per_step"] == 2048
    assert json.loads((out / "training_args.json").read_text())["model_name_or_path"] == str(preset_run)
