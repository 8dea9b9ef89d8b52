"""The training library's CPU kernels: fast dropout with P_drop's semantics (§5.4), installed by a switch."""

import math

import pytest
import torch
from conftest import tiny_config
from torch import nn

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.cpu_kernels import CPUDropout, dropout, use_cpu_kernels


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_drops_with_probability_p_and_scales_the_rest(p):
    """§5.4 dropout: every element (and each of the four 16-bit lanes of a random word) is dropped with
    probability p (rounded to 2^-16) independently; kept ones are scaled by 1 / (1 - p), as `F.dropout`."""
    torch.manual_seed(0)
    x = torch.rand(1 << 22) + 0.5  # no zeros: a zero in the output is a drop
    torch.manual_seed(1)
    out = dropout(x, p, training=True)
    kept = out != 0
    rate = round(p * 65536) / 65536
    sigma = math.sqrt(rate * (1 - rate) / (x.numel() / 4))
    for lane in range(4):  # elements 4i + lane come from the same 16 bits of each 64-bit word
        assert abs((~kept[lane::4]).float().mean().item() - rate) < 5 * sigma
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    pairs = kept[: (1 << 22) - 1 : 2] & kept[1::2]  # neighbours are independent: P(both kept) = (1 - p)^2
    assert abs(pairs.float().mean().item() - (1 - rate) ** 2) < 10 * sigma
    torch.manual_seed(1)
    assert torch.equal(dropout(x, p, training=True), out)  # seeded by torch's generator


def test_dropout_gradient_bf16_identity_and_errors():
    x = torch.randn(7, 33, dtype=torch.bfloat16, requires_grad=True)
    out = dropout(x, 0.25, training=True)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    expected = (out != 0).to(torch.bfloat16) * (1 / 0.75)
    torch.testing.assert_close(x.grad, expected)
    torch.testing.assert_close(out, torch.where(out != 0, x * (1 / 0.75), 0.0))
    y = torch.randn(5)
    assert dropout(y, 0.1, training=False) is y and dropout(y, 0.0, training=True) is y
    assert torch.equal(dropout(y, 1.0, training=True), torch.zeros(5))
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        dropout(y, 1.5, training=True)


def test_use_cpu_kernels_swaps_every_dropout_and_saves_the_same_model(tmp_path):
    """Every `nn.Dropout` of the model computes with `CPUDropout`; the state dict and the saved config are those
    of the model without the switch, and a model loaded back uses `nn.Dropout`."""
    torch.manual_seed(0)
    config = tiny_config(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    model = VaswaniTransformerForConditionalGeneration(config)
    dropouts = [module for module in model.modules() if isinstance(module, nn.Dropout)]
    assert len(dropouts) == 2 + 2 * config.encoder_layers + 2 * config.decoder_layers  # stacks, layers, FFNs
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert use_cpu_kernels(model) is model
    assert all(type(module) is CPUDropout for module in dropouts)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[name], after[name]) for name in before)
    model.save_pretrained(tmp_path)
    loaded = VaswaniTransformerForConditionalGeneration.from_pretrained(tmp_path)
    assert not any(isinstance(module, CPUDropout) for module in loaded.modules())
    model.eval()
    source = torch.randint(4, 1000, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=source, labels=source).logits,
                                   loaded.eval()(input_ids=source, labels=source).logits)  # fmt: skip
    model.train()
    torch.manual_seed(3)
    x = torch.rand(1000) + 0.5
    torch.manual_seed(4)
    dropped = dropouts[0](x)
    torch.manual_seed(4)
    assert torch.equal(dropped, dropout(x, 0.1, training=True))
