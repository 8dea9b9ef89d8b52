"""Behaviour of the model, and parity with transformers' MarianMTModel holding the same weights."""

import pytest
import torch
from conftest import tiny_config
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, MarianConfig, MarianMTModel

from vaswani_transformer import (
    VaswaniTransformerConfig,
    VaswaniTransformerForConditionalGeneration,
    VaswaniTransformerModel,
)
from vaswani_transformer.convert import from_marian
from vaswani_transformer.modeling_vaswani_transformer import OUTPUT_CACHE_FIELD


ATTENTION_IMPLEMENTATIONS = ["sdpa", "eager"]


def random_marian(vocab_size: int, attn_implementation: str, seed: int = 0) -> MarianMTModel:
    """A randomly initialised Marian with the paper's math: ReLU, post-norm, scaled and tied embeddings."""
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        activation_function="relu",
        scale_embedding=True,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        forced_eos_token_id=None,
        init_std=0.2,  # large weights: varied, non-degenerate random translations
    )
    config._attn_implementation = attn_implementation
    return MarianMTModel(config).eval()


def make_model(seed: int = 0, **overrides) -> VaswaniTransformerForConditionalGeneration:
    torch.manual_seed(seed)
    return VaswaniTransformerForConditionalGeneration(tiny_config(**overrides)).eval()


@pytest.fixture(scope="module")
def real_batch(small_tokenizer, real_sentences):
    return small_tokenizer(real_sentences["en"], text_target=real_sentences["de"], padding=True, return_tensors="pt")


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_forward_matches_marian_within_fp32_noise(attn_implementation, small_tokenizer, real_batch):
    marian = random_marian(len(small_tokenizer), attn_implementation)
    ours = from_marian(marian)
    inputs = dict(
        input_ids=real_batch["input_ids"],
        attention_mask=real_batch["attention_mask"],
        decoder_input_ids=ours.prepare_decoder_input_ids_from_labels(real_batch["labels"]),
    )
    with torch.no_grad():
        expected = marian(**inputs)
        got = ours(**inputs)
        # fp32 noise floor: how far Marian's own fp32 result lies from its fp64 result on the same input.
        reference = random_marian(len(small_tokenizer), attn_implementation).double()(**inputs)
    for name in ("encoder_last_hidden_state", "logits"):
        noise = (getattr(expected, name).double() - getattr(reference, name)).abs().max().item()
        assert noise > 0
        error = (getattr(got, name).double() - getattr(expected, name).double()).abs().max().item()
        assert error <= 4 * noise, f"{name}: |ours - marian| = {error:.3g} exceeds 4x the fp32 noise {noise:.3g}"


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
@pytest.mark.parametrize("num_beams", [1, 4])
def test_generate_matches_marian_on_real_sentences(attn_implementation, num_beams, small_tokenizer, real_batch):
    marian = random_marian(len(small_tokenizer), attn_implementation, seed=1)
    ours = from_marian(marian)
    kwargs = dict(
        input_ids=real_batch["input_ids"],
        attention_mask=real_batch["attention_mask"],
        num_beams=num_beams,
        max_new_tokens=20,
        do_sample=False,
    )
    expected = marian.generate(**kwargs)
    got = ours.generate(**kwargs)
    assert expected.shape[1] > 5 and len(set(expected[:, 1:].flatten().tolist())) > 5  # not a degenerate output
    assert torch.equal(got, expected)


def test_beam_search_returning_several_sequences_equals_marians(small_tokenizer, real_batch):
    marian = random_marian(len(small_tokenizer), "sdpa", seed=2)
    ours = from_marian(marian)
    kwargs = dict(
        input_ids=real_batch["input_ids"],
        attention_mask=real_batch["attention_mask"],
        num_beams=4,
        num_return_sequences=2,
        length_penalty=0.6,
        max_new_tokens=20,
        do_sample=False,
    )
    assert torch.equal(ours.generate(**kwargs), marian.generate(**kwargs))


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_one_encoder_row_per_sentence_equals_one_per_beam(attn_implementation, real_batch):
    """A decoder layer whose rows of a sentence share one encoder row (what our beam search gives it, with the source
    mask built for `(sentences, beams * tgt_len)` queries) == the same layer with that row repeated per beam."""
    from transformers.masking_utils import create_bidirectional_mask

    model = make_model(seed=3, attn_implementation=attn_implementation)
    beams, sentences, tgt_len = 3, 3, 4
    source, mask = real_batch["input_ids"][:sentences], real_batch["attention_mask"][:sentences].clone()
    mask[1, -2:] = 0  # some source padding, so that the mask matters
    layer = model.get_decoder().layers[0]
    torch.manual_seed(0)
    hidden = torch.randn(sentences * beams, tgt_len, model.config.d_model)  # beams of a sentence differ

    def run(memory, source_mask, queries):
        cross_mask = create_bidirectional_mask(
            config=model.config, inputs_embeds=queries, attention_mask=source_mask, encoder_hidden_states=memory
        )
        return layer(hidden, None, memory, encoder_attention_mask=cross_mask)

    with torch.no_grad():
        memory = model.get_encoder()(input_ids=source, attention_mask=mask).last_hidden_state  # (3, src_len, d)
        shared = run(memory, mask, hidden.view(sentences, beams * tgt_len, -1))
        repeated = run(memory.repeat_interleave(beams, 0), mask.repeat_interleave(beams, 0), hidden)
        torch.testing.assert_close(shared, repeated, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="not a multiple of the encoder batch 2"):
            layer(hidden, None, memory[:2])


def test_beam_search_projects_keys_and_values_once_per_sentence(real_batch):
    """Our beam search computes W^K and W^V of the encoder output once, one row per sentence (not per beam)."""
    model = make_model(seed=4)
    inputs = dict(input_ids=real_batch["input_ids"][:2], attention_mask=real_batch["attention_mask"][:2])
    rows = []
    kv_proj = model.get_decoder().layers[0].encoder_attn.kv_proj
    hook = kv_proj.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    try:
        model.generate(**inputs, num_beams=4, max_new_tokens=5)
    finally:
        hook.remove()
    assert rows == [2]


def test_from_marian_refuses_what_it_cannot_represent():
    marian = random_marian(50, "eager")
    marian.final_logits_bias[0, 3] = 1.0
    with pytest.raises(ValueError, match="final_logits_bias"):
        from_marian(marian)
    for name, value in [("encoder_layerdrop", 0.1), ("decoder_vocab_size", 60)]:
        marian = random_marian(50, "eager")
        setattr(marian.config, name, value)
        with pytest.raises(ValueError, match=name):
            from_marian(marian)
    with pytest.raises(TypeError, match="MarianMTModel"):
        from_marian(make_model())


def test_sdpa_equals_eager(real_batch):
    model = make_model(vocab_size=1000)
    with torch.no_grad():
        outputs = {}
        for implementation in ATTENTION_IMPLEMENTATIONS:
            model.set_attn_implementation(implementation)
            outputs[implementation] = model(**real_batch).logits
    torch.testing.assert_close(outputs["sdpa"], outputs["eager"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_padding_does_not_change_any_row(attn_implementation, small_tokenizer, real_sentences):
    model = make_model(attn_implementation=attn_implementation)
    batch = small_tokenizer(real_sentences["en"], text_target=real_sentences["de"], padding=True, return_tensors="pt")
    with torch.no_grad():
        batched = model(**batch).logits
        for row, (source, target) in enumerate(zip(real_sentences["en"], real_sentences["de"], strict=True)):
            single = small_tokenizer([source], text_target=[target], return_tensors="pt")
            alone = model(**single).logits[0]
            torch.testing.assert_close(batched[row, : alone.shape[0]], alone, rtol=1e-5, atol=1e-5)


def test_future_target_tokens_do_not_change_earlier_logits():
    model = make_model()
    source = torch.randint(4, 1000, (2, 9))
    target = torch.randint(4, 1000, (2, 8))
    changed = target.clone()
    changed[:, 5:] = torch.randint(4, 1000, (2, 3))
    with torch.no_grad():
        before = model(input_ids=source, decoder_input_ids=target).logits
        after = model(input_ids=source, decoder_input_ids=changed).logits
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=0)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


# The decoder cache's name: `cache` from transformers 5.25 on; `past_key_values`, what generate() passes before it.
@pytest.mark.parametrize("cache_name", ["cache", "past_key_values"])
@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_cached_incremental_decoding_equals_full_forward(attn_implementation, cache_name, real_batch):
    model = make_model(attn_implementation=attn_implementation)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(real_batch["labels"])[:, :7]
    with torch.no_grad():
        full = model(
            input_ids=real_batch["input_ids"],
            attention_mask=real_batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
        ).logits
        encoder_outputs = model.get_encoder()(real_batch["input_ids"], attention_mask=real_batch["attention_mask"])
        past, steps = None, []
        for position in range(decoder_input_ids.shape[1]):
            step = model(
                encoder_outputs=encoder_outputs,
                attention_mask=real_batch["attention_mask"],
                decoder_input_ids=decoder_input_ids[:, position : position + 1],
                use_cache=True,
                **{cache_name: past},
            )
            past = getattr(step, OUTPUT_CACHE_FIELD)
            steps.append(step.logits)
    assert past.get_seq_length() == decoder_input_ids.shape[1]
    assert all(past.is_updated.values())  # cross-attention K/V were projected once and reused
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_the_cache_under_both_names_is_refused(real_batch):
    model = make_model()
    step = model(input_ids=real_batch["input_ids"], decoder_input_ids=real_batch["labels"][:, :1], use_cache=True)
    cache = getattr(step, OUTPUT_CACHE_FIELD)
    with pytest.raises(ValueError, match="Both `past_key_values` and `cache` are set"):
        model(input_ids=real_batch["input_ids"], decoder_input_ids=real_batch["labels"][:, 1:2], cache=cache,
              past_key_values=cache)  # fmt: skip


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "search", [dict(num_beams=1), dict(num_beams=4), dict(do_sample=True, top_k=5)], ids=["greedy", "beam4", "sample"]
)
def test_generate_with_the_cache_equals_generate_without_it(attn_implementation, search, small_tokenizer, real_batch):
    """`generate()` decoding one token a step through the cache it passes to `forward` (`cache` from transformers
    5.25 on, `past_key_values` before) gives the tokens of recomputing every prefix (`use_cache=False`)."""
    model = from_marian(random_marian(len(small_tokenizer), attn_implementation))
    inputs = dict(input_ids=real_batch["input_ids"][:6], attention_mask=real_batch["attention_mask"][:6])
    generated = {}
    for use_cache in (True, False):
        torch.manual_seed(0)
        generated[use_cache] = model.generate(**inputs, max_new_tokens=12, use_cache=use_cache, **search)
    assert torch.equal(generated[True], generated[False])
    assert len({tuple(row.tolist()) for row in generated[True]}) > 1  # varied translations, not one degenerate row


def test_output_attentions_returns_every_layer_and_head(real_batch):
    config = tiny_config(encoder_layers=3, decoder_layers=2)
    model = VaswaniTransformerForConditionalGeneration(config).eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(**real_batch, output_attentions=True)
    batch, src_len = real_batch["input_ids"].shape
    tgt_len = real_batch["labels"].shape[1]
    heads = config.encoder_attention_heads
    assert [a.shape for a in out.encoder_attentions] == [(batch, heads, src_len, src_len)] * 3
    assert [a.shape for a in out.decoder_attentions] == [(batch, heads, tgt_len, tgt_len)] * 2
    assert [a.shape for a in out.cross_attentions] == [(batch, heads, tgt_len, src_len)] * 2
    # Rows are distributions, padded source positions get no weight, and the decoder never looks ahead.
    torch.testing.assert_close(out.cross_attentions[0].sum(-1), torch.ones(batch, heads, tgt_len))
    padded = real_batch["attention_mask"] == 0
    assert out.cross_attentions[0].permute(0, 1, 3, 2)[padded[:, None, :].expand(-1, heads, -1)].abs().max() == 0
    assert torch.triu(out.decoder_attentions[1], diagonal=1).abs().max() == 0


def test_sequences_longer_than_max_position_embeddings():
    model = make_model(max_position_embeddings=8)
    source = torch.randint(4, 1000, (1, 20))
    with torch.no_grad():
        logits = model(input_ids=source, decoder_input_ids=source[:, :12]).logits
        generated = model.generate(input_ids=source, max_new_tokens=15, min_new_tokens=15)
    assert logits.shape == (1, 12, 1000) and torch.isfinite(logits).all()
    assert generated.shape == (1, 16)


def test_labels_give_loss_and_shifted_decoder_inputs():
    model = make_model()
    source, labels = torch.randint(4, 1000, (2, 6)), torch.randint(4, 1000, (2, 5))
    labels[1, 3:] = -100
    with torch.no_grad():
        out = model(input_ids=source, labels=labels)
        decoder_input_ids = torch.cat([torch.full((2, 1), 1), labels[:, :-1].clamp(min=0)], dim=1)
        explicit = model(input_ids=source, decoder_input_ids=decoder_input_ids, labels=labels)
    assert torch.equal(out.logits, explicit.logits)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_pre_norm_variant_has_final_layer_norms_and_runs():
    model = make_model(layer_norm_position="pre")
    assert model.model.encoder.layer_norm is not None and model.model.decoder.layer_norm is not None
    assert make_model().model.encoder.layer_norm is None
    source = torch.randint(4, 1000, (2, 6))
    loss = model.train()(input_ids=source, labels=source).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_gradient_checkpointing_gives_the_same_gradients():
    source, labels = torch.randint(4, 1000, (2, 6)), torch.randint(4, 1000, (2, 5))
    gradients = []
    for checkpointing in (False, True):
        model = make_model(seed=3).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(input_ids=source, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, msg=name)


@pytest.mark.parametrize("tie_word_embeddings", [True, False])
def test_save_load_round_trip_is_exact_and_safetensors_only(tmp_path, tie_word_embeddings):
    model = make_model(tie_word_embeddings=tie_word_embeddings)
    model.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    assert {"configuration_vaswani_transformer.py", "modeling_vaswani_transformer.py"} <= files
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is VaswaniTransformerForConditionalGeneration
    for (name, expected), (_, got) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(expected, got), name
    embeddings = loaded.model.encoder.embed_tokens.weight
    assert (loaded.lm_head.weight is embeddings) == tie_word_embeddings
    assert (loaded.model.decoder.embed_tokens.weight is embeddings) == tie_word_embeddings


def test_auto_classes(tmp_path):
    config = tiny_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is VaswaniTransformerConfig
    assert loaded.to_diff_dict() | {"_name_or_path": ""} == config.to_diff_dict() | {"_name_or_path": ""}
    assert type(AutoModel.from_config(config)) is VaswaniTransformerModel
    assert type(AutoModelForSeq2SeqLM.from_config(config)) is VaswaniTransformerForConditionalGeneration


def test_sampling_and_beam_search_run():
    model = make_model()
    source = torch.randint(4, 1000, (3, 7))
    torch.manual_seed(0)
    sampled = model.generate(input_ids=source, do_sample=True, top_k=50, max_new_tokens=8)
    beams = model.generate(input_ids=source, num_beams=4, num_return_sequences=2, length_penalty=0.6, max_new_tokens=8)
    assert sampled.shape[0] == 3 and beams.shape[0] == 6


def test_tiny_model_learns_to_copy():
    """A few hundred Adam steps on CPU teach a tiny model to copy random sequences (greedy decoding exact)."""
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(
        tiny_config(vocab_size=20, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, label_smoothing=0.0)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    for _ in range(400):
        source = torch.randint(4, 20, (32, 8))
        source[:, -1] = 2  # </s>
        loss = model(input_ids=source, labels=source).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = torch.randint(4, 20, (64, 8))
    test[:, -1] = 2
    generated = model.generate(input_ids=test, max_new_tokens=8, num_beams=1, do_sample=False)
    assert loss.item() < 0.1 * torch.log(torch.tensor(20.0))  # a tenth of the uniform-guess loss, ln(20) nats
    correct = generated[:, 1:9] == test
    assert correct.float().mean() >= 0.98  # tokens
    assert correct.all(dim=1).float().mean() >= 0.9  # whole sequences copied exactly
