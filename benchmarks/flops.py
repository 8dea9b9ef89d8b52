"""Model FLOP utilisation: analytic FLOPs of a training step, and their share of the measured matmul peak."""

from __future__ import annotations

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.batching import non_pad_tokens


__all__ = ["model_flops_utilization", "training_flops"]


def training_flops(model: VaswaniTransformerForConditionalGeneration, batch: dict) -> dict:
    """Analytic FLOPs of one training step (forward + backward), after Kaplan et al. 2020 (arXiv:2001.08361, §2.1)
    and the PaLM paper's Appendix B (Chowdhery et al. 2022, arXiv:2204.02311):

        C = 6 * N_enc * src_tokens + 6 * N_dec * tgt_tokens                        (weights: 2 forward + 4 backward)
          + 6 * d_model * V * tgt_tokens                                            (output projection, tied: §3.4)
          + 12 * d_model * (L_enc * S * src_tokens + L_dec * (T + S) * tgt_tokens)  (attention scores and mixing)

    N_enc, N_dec: non-embedding parameters of the encoder and decoder layers (embedding lookups cost no FLOPs); V the
    vocabulary; S, T the padded source and target lengths (each query attends to S or T keys: Q K^T and A V cost
    2 * d_model FLOPs per key each, x3 for training; causal masking is not discounted, as in PaLM). Tokens are non-pad
    tokens, so padding counts as waste, not as work. The same FLOPs are credited to every contender.
    """
    config = model.config
    n_enc = sum(p.numel() for p in model.model.encoder.layers.parameters())
    n_dec = sum(p.numel() for p in model.model.decoder.layers.parameters())
    src_tokens, tgt_tokens = non_pad_tokens(batch)
    src_len, tgt_len = batch["input_ids"].shape[1], batch["labels"].shape[1]
    d_model, vocab = config.d_model, config.vocab_size
    weights = 6 * n_enc * src_tokens + 6 * n_dec * tgt_tokens
    output = 6 * d_model * vocab * tgt_tokens
    attention = (
        12
        * d_model
        * (config.encoder_layers * src_len * src_tokens + config.decoder_layers * (tgt_len + src_len) * tgt_tokens)
    )
    total = weights + output + attention
    return {
        "non_embedding_params_encoder": n_enc,
        "non_embedding_params_decoder": n_dec,
        "flops_weights": weights,
        "flops_output_projection": output,
        "flops_attention": attention,
        "flops_per_step": total,
        "flops_per_token": total / (src_tokens + tgt_tokens),
    }


def model_flops_utilization(flops_per_token: float, tokens_per_s: float, peak_gflops: float) -> float:
    """MFU (PaLM, Appendix B): the model's FLOPs per second, `flops_per_token * tokens_per_s`, over the peak."""
    return flops_per_token * tokens_per_s / (peak_gflops * 1e9)
