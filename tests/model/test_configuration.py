"""`VaswaniTransformerConfig`: Table 3 presets, Hugging Face aliases, and clear errors on bad values."""

import pytest

from vaswani_transformer import VaswaniTransformerConfig


def test_base_preset_is_table_3():
    config = VaswaniTransformerConfig.base()
    assert (config.encoder_layers, config.decoder_layers) == (6, 6)  # N
    assert config.d_model == 512 and config.encoder_ffn_dim == config.decoder_ffn_dim == 2048
    assert config.encoder_attention_heads == config.decoder_attention_heads == 8
    assert config.dropout == 0.1 and config.label_smoothing == 0.1 and config.vocab_size == 37000


def test_big_preset_is_table_3_and_accepts_overrides():
    config = VaswaniTransformerConfig.big(vocab_size=32000, dropout=0.1)
    assert config.d_model == 1024 and config.encoder_ffn_dim == 4096 and config.encoder_attention_heads == 16
    assert config.dropout == 0.1 and config.vocab_size == 32000
    assert VaswaniTransformerConfig.big().dropout == 0.3


def test_defaults_are_the_paper():
    config = VaswaniTransformerConfig()
    assert config.layer_norm_position == "post" and config.positional_encoding_layout == "interleaved"
    assert config.activation_function == "relu" and config.scale_embedding and config.tie_word_embeddings
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert config.is_encoder_decoder


def test_attribute_map_gives_generic_names():
    config = VaswaniTransformerConfig(d_model=64, encoder_attention_heads=4, encoder_layers=3)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (64, 4, 3)


def test_save_and_load(tmp_path):
    config = VaswaniTransformerConfig.base(vocab_size=1234, layer_norm_position="pre")
    config.save_pretrained(tmp_path)
    loaded = VaswaniTransformerConfig.from_pretrained(tmp_path)
    assert loaded.vocab_size == 1234 and loaded.layer_norm_position == "pre" and loaded.d_model == 512


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 510}, r"d_model \(510\).*encoder_attention_heads \(8\)"),
        ({"decoder_attention_heads": 7}, r"d_model \(512\).*decoder_attention_heads \(7\)"),
        ({"activation_function": "swishy"}, "activation_function 'swishy'"),
        ({"layer_norm_position": "middle"}, "layer_norm_position 'middle'"),
        ({"positional_encoding_layout": "rotary"}, "positional_encoding_layout 'rotary'"),
        ({"encoder_layers": 0}, "'encoder_layers': 0"),
        ({"vocab_size": -5}, "'vocab_size': -5"),
        ({"decoder_ffn_dim": 0}, "'decoder_ffn_dim': 0"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\), got 1.0"),
        ({"attention_dropout": -0.1}, r"attention_dropout must lie in \[0, 1\), got -0.1"),
        ({"label_smoothing": 1.5}, r"label_smoothing must lie in \[0, 1\), got 1.5"),
        ({"init_std": 0.0}, "init_std must be positive"),
    ],
)
def test_bad_values_raise_value_error_naming_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        VaswaniTransformerConfig(**overrides)
