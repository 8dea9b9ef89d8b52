"""`build_optimizer`: PyTorch's fused Adam kernel with the paper's settings (§5.3), the same steps as plain Adam."""

import torch
from conftest import tiny_config

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.recipe import ADAM_BETAS, ADAM_EPS, build_optimizer


def test_fused_adam_takes_the_steps_of_plain_adam_with_the_papers_settings():
    """Fused where the parameters are on CPU or CUDA (the devices accelerate moves them to; a flag the optimizer
    keeps when the model later moves), beta1 0.9, beta2 0.98, eps 1e-9; three steps from the same gradients equal a
    per-parameter (`foreach=False`) Adam's to fp32 rounding. The gradients are drawn, not computed: some of a
    model's (e.g. of the key biases, to which softmax is invariant) are rounding noise, which eps = 1e-9 turns
    into full-size steps of either sign."""
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(tiny_config())
    reference = VaswaniTransformerForConditionalGeneration(tiny_config())
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(model, lr=1e-3)
    assert fused.defaults["fused"] and fused.defaults["betas"] == ADAM_BETAS == (0.9, 0.98)
    assert fused.defaults["eps"] == ADAM_EPS == 1e-9
    plain = torch.optim.Adam(reference.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9, foreach=False)
    for _ in range(3):
        for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
            ours.grad = torch.randn_like(ours)
            theirs.grad = ours.grad.clone()
        fused.step()
        plain.step()
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want)
    assert not build_optimizer(model, fused=False).defaults["fused"]
