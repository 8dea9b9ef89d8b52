"""The model against the paper's own formulas (§3.1, §3.2.1 Eq. 1, §3.4, §3.5, §5.4, Table 3)."""

import math

import pytest
import torch
from conftest import tiny_config
from torch.nn import functional as F

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.modeling_vaswani_transformer import (
    VaswaniTransformerDecoderLayer,
    VaswaniTransformerEncoderLayer,
    VaswaniTransformerPositionalEncoding,
    scaled_dot_product_attention,
    shift_tokens_right,
    sinusoidal_positional_encoding,
)


def paper_positional_encoding(pos: int, dim: int, d_model: int) -> float:
    """§3.5 written out: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(...)."""
    i = dim // 2
    angle = pos / 10000 ** (2 * i / d_model)
    return math.sin(angle) if dim % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [8, 512])
def test_interleaved_positional_encoding_is_section_3_5(d_model):
    table = sinusoidal_positional_encoding(60, d_model, "interleaved")
    expected = torch.tensor([[paper_positional_encoding(p, j, d_model) for j in range(d_model)] for p in range(60)])
    torch.testing.assert_close(table, expected, rtol=0, atol=1e-6)


def test_concatenated_positional_encoding_is_sines_then_cosines():
    d_model = 16
    table = sinusoidal_positional_encoding(30, d_model, "concatenated")
    for pos in range(30):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, d_model // 2 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_positional_encoding_beyond_the_table_follows_the_formula():
    module = VaswaniTransformerPositionalEncoding(tiny_config(max_position_embeddings=10))
    beyond = module(seq_len=5, past_length=8)  # positions 8..12, partly past the 10-row table
    torch.testing.assert_close(beyond, sinusoidal_positional_encoding(13, 16)[8:], rtol=0, atol=1e-6)


def test_scaled_dot_product_attention_is_equation_1():
    torch.manual_seed(0)
    module = torch.nn.Module().eval()
    query, key, value = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    output, weights = scaled_dot_product_attention(module, query, key, value, attention_mask=None)
    expected_weights = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(4), dim=-1)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(output, (expected_weights @ value).transpose(1, 2))


def test_attention_on_hand_built_tensors():
    """One query aligned with the second of two keys: weights softmax([0, 2] / sqrt(2)), output their mix of V."""
    module = torch.nn.Module().eval()
    query = torch.tensor([[[[0.0, 2.0]]]])  # (batch 1, heads 1, tgt_len 1, d_k 2)
    key = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # two keys
    value = torch.tensor([[[[10.0, 0.0], [0.0, 10.0]]]])
    output, weights = scaled_dot_product_attention(module, query, key, value, attention_mask=None)
    second = math.exp(2 / math.sqrt(2)) / (1 + math.exp(2 / math.sqrt(2)))
    torch.testing.assert_close(weights.flatten(), torch.tensor([1 - second, second]))
    torch.testing.assert_close(output.flatten(), torch.tensor([10 * (1 - second), 10 * second]))
    # A mask of -inf on the second key (§3.2.3) puts all weight on the first.
    masked, _ = scaled_dot_product_attention(module, query, key, value, torch.tensor([0.0, -math.inf]))
    torch.testing.assert_close(masked.flatten(), torch.tensor([10.0, 0.0]))


@pytest.mark.parametrize("layer_norm_position", ["post", "pre"])
def test_layers_wrap_each_sublayer_in_residual_and_layer_norm(layer_norm_position):
    """§3.1: LayerNorm(x + Sublayer(x)) for each sub-layer (pre-norm: x + Sublayer(LayerNorm(x))), in paper order."""
    torch.manual_seed(0)
    config = tiny_config(layer_norm_position=layer_norm_position)
    config._attn_implementation = "eager"
    encoder_layer, decoder_layer = VaswaniTransformerEncoderLayer(config), VaswaniTransformerDecoderLayer(config)
    for module in (encoder_layer, decoder_layer):
        for norm in module.modules():
            if isinstance(norm, torch.nn.LayerNorm):
                torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
                torch.nn.init.uniform_(norm.bias, -0.5, 0.5)
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)

    def residual(h, sublayer, norm):
        if layer_norm_position == "pre":
            return h + sublayer(norm(h))
        return F.layer_norm(h + sublayer(h), (16,), norm.weight, norm.bias, config.layer_norm_eps)

    def self_attention(attention):
        return lambda h: attention(h, attention_mask=None)[0]

    encoder, decoder = encoder_layer.eval(), decoder_layer.eval()
    with torch.no_grad():
        h = residual(x, self_attention(encoder.self_attn), encoder.self_attn_layer_norm)
        torch.testing.assert_close(encoder(x, None), residual(h, encoder.ffn, encoder.final_layer_norm))
        h = residual(x, self_attention(decoder.self_attn), decoder.self_attn_layer_norm)
        h = residual(h, lambda h: decoder.encoder_attn(h, key_value_states=memory)[0], decoder.encoder_attn_layer_norm)
        torch.testing.assert_close(decoder(x, None, memory), residual(h, decoder.ffn, decoder.final_layer_norm))

        # §5.4: dropout hits the sub-layer output before the addition; P_drop = 1 leaves only the residual path.
        encoder.train().dropout.p = 1.0
        dropped = encoder(x, None)
        if layer_norm_position == "pre":
            torch.testing.assert_close(dropped, x)
        else:
            torch.testing.assert_close(dropped, encoder.final_layer_norm(encoder.self_attn_layer_norm(x)))


def test_embeddings_are_scaled_by_sqrt_d_model_and_summed_with_positions():
    model = VaswaniTransformerForConditionalGeneration(tiny_config(d_model=16)).eval()
    encoder = model.model.encoder
    source = torch.tensor([[5, 6, 7, 2]])
    seen = {}
    encoder.layers[0].register_forward_pre_hook(lambda module, args: seen.update(input=args[0]))
    with torch.no_grad():
        encoder(source)
    expected = encoder.embed_tokens.weight[source] * math.sqrt(16) + sinusoidal_positional_encoding(4, 16)
    torch.testing.assert_close(seen["input"], expected)


def test_source_target_and_softmax_weights_are_one_tensor():
    model = VaswaniTransformerForConditionalGeneration(tiny_config())
    embedding = model.model.encoder.embed_tokens.weight
    assert model.model.decoder.embed_tokens.weight is embedding and model.lm_head.weight is embedding
    assert len({p.data_ptr() for p in (embedding, model.model.decoder.embed_tokens.weight, model.lm_head.weight)}) == 1


def szegedy_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """§5.4 / Szegedy et al. written out: -sum_k q(k) log p(k), q = (1 - eps) one_hot(y) + eps / V; -100 ignored."""
    vocab_size = logits.shape[-1]
    log_probs = logits.float().log_softmax(-1)
    keep = labels != -100
    target = F.one_hot(labels.clamp(min=0), vocab_size).float() * (1 - eps) + eps / vocab_size
    return -(target * log_probs).sum(-1)[keep].mean()


def test_model_loss_uses_config_label_smoothing():
    """The model's own loss (§5.4, eps_ls = config.label_smoothing) against the formula written out."""
    model = VaswaniTransformerForConditionalGeneration(tiny_config(label_smoothing=0.1)).eval()
    source, labels = torch.randint(4, 1000, (2, 6)), torch.randint(4, 1000, (2, 5))
    labels[1, 3:] = -100
    with torch.no_grad():
        out = model(input_ids=source, labels=labels)
    torch.testing.assert_close(out.loss, szegedy_loss(out.logits, labels, 0.1))


def test_shift_tokens_right():
    labels = torch.tensor([[7, 8, 2], [9, 2, -100]])
    assert shift_tokens_right(labels, pad_token_id=0, decoder_start_token_id=1).tolist() == [[1, 7, 8], [1, 9, 2]]


@pytest.mark.parametrize(("preset", "paper_millions"), [("base", 65), ("big", 213)])
def test_parameter_counts_match_table_3(preset, paper_millions):
    """Table 3 lists 65M (base) and 213M (big) parameters with the 37000-token shared EN-DE vocabulary."""
    config = getattr(VaswaniTransformerConfig, preset)(vocab_size=37000)
    with torch.device("meta"):
        model = VaswaniTransformerForConditionalGeneration(config)
    parameters = sum(p.numel() for p in model.parameters())  # tied matrices counted once
    assert abs(parameters / 1e6 - paper_millions) / paper_millions < 0.05, f"{parameters / 1e6:.1f}M"
