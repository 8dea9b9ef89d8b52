"""The three contenders, built with the same sizes, and one training step of each.

- "ours": `VaswaniTransformerForConditionalGeneration`;
- "marian": transformers' `MarianMTModel` configured with the paper's math by `config_to_marian` (ReLU, post-norm,
  sinusoidal positions, embeddings scaled by sqrt(d_model) and shared by encoder, decoder and the output projection);
- "torch": `TorchSeq2Seq`, the same model written on `torch.nn.Transformer` (what a user would write by hand).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers import MarianMTModel

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.convert import config_to_marian, from_marian, to_marian
from vaswani_transformer.modeling_vaswani_transformer import shift_tokens_right, sinusoidal_positional_encoding
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.cpu_kernels import use_cpu_kernels
from vaswani_transformer.training.criterion import LabelSmoothedCrossEntropyCriterion
from vaswani_transformer.training.recipe import build_optimizer

from .timing import synchronize


__all__ = [
    "CONTENDERS",
    "P_DROP",
    "RANDOM_MARIAN_INIT_STD",
    "Size",
    "TorchSeq2Seq",
    "build_contender",
    "make_training_step",
    "prepared_batch",
    "training_loss",
    "translation_models",
]

# P_drop and eps_ls (§5.4) of every contender: our config's defaults, the base model's.
P_DROP, LABEL_SMOOTHING = VaswaniTransformerConfig.dropout, VaswaniTransformerConfig.label_smoothing
CONTENDERS = ("ours", "marian", "torch")
RANDOM_MARIAN_INIT_STD = 0.2  # large weights: a random Marian whose translations are varied, not degenerate


@dataclasses.dataclass(frozen=True)
class Size:
    """Model sizes (the paper's symbols: d_model, N, h, d_ff) and the vocabulary of the output projection."""

    name: str
    d_model: int
    layers: int
    heads: int
    ffn_dim: int
    vocab_size: int
    # The attention kernel ours and Marian train with ("sdpa" or "eager", transformers' attn_implementation; the
    # same for both, so that they compare the same math and kernels): the training preset's choice at its size.
    attn_implementation: str = "sdpa"
    # Dropout on the attention weights and on the ReLU output of the position-wise feed-forward (tensor2tensor's
    # attention_dropout and relu_dropout; 0 in the paper, 0.1 in the Multi30k EN-DE preset), every contender alike.
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    # Ours only: the training library's CPU kernels (`training.cpu_kernels.use_cpu_kernels`), as a preset with
    # `cpu_kernels: true` trains; Marian and the torch model have no such option.
    cpu_kernels: bool = False

    @classmethod
    def of(cls, name: str, config: VaswaniTransformerConfig, **settings) -> Size:
        """The size of `config`'s encoder (N, d_model, h, d_ff) and vocabulary, named `name`; `settings`: the other
        fields (attention kernel, dropouts, CPU kernels)."""
        return cls(
            name,
            config.d_model,
            config.encoder_layers,
            config.encoder_attention_heads,
            config.encoder_ffn_dim,
            config.vocab_size,
            **settings,
        )

    def config(self, training: bool = True) -> VaswaniTransformerConfig:
        """Our config of this size, encoder and decoder alike; every contender is built from it. Dropout P_drop and
        the size's attention and activation dropout when `training`, none otherwise."""
        return VaswaniTransformerConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            encoder_layers=self.layers,
            decoder_layers=self.layers,
            encoder_attention_heads=self.heads,
            decoder_attention_heads=self.heads,
            encoder_ffn_dim=self.ffn_dim,
            decoder_ffn_dim=self.ffn_dim,
            dropout=P_DROP if training else 0.0,
            attention_dropout=self.attention_dropout if training else 0.0,
            activation_dropout=self.activation_dropout if training else 0.0,
        )


class TorchSeq2Seq(nn.Module):
    """The paper's model on `torch.nn.Transformer`: shared embedding * sqrt(d_model) + sinusoids (§3.5, the paper's
    interleaved layout), post-norm ReLU layers, output projection tied to the embedding. The stacks are passed as
    custom encoder/decoder without the final LayerNorm that `nn.Transformer` adds by default (post-norm ends
    normalised). `nn.Transformer`'s layers take one dropout for all: the residual dropouts get P_drop, and the
    attention weights and the ReLU output get the size's `attention_dropout` and `activation_dropout`, as in ours.
    """

    def __init__(self, size: Size, dropout: float = P_DROP, pad_token_id: int = 0, max_positions: int = 1024):
        super().__init__()
        self.pad_token_id, self.dropout, self.scale = pad_token_id, dropout, math.sqrt(size.d_model)
        self.embed = nn.Embedding(size.vocab_size, size.d_model, padding_idx=pad_token_id)
        nn.init.normal_(self.embed.weight, std=size.d_model**-0.5)
        positions = sinusoidal_positional_encoding(max_positions, size.d_model, layout="interleaved")
        self.register_buffer("positions", positions, persistent=False)  # (max_positions, d_model)
        layer = dict(d_model=size.d_model, nhead=size.heads, dim_feedforward=size.ffn_dim, dropout=dropout)
        layer.update(activation="relu", batch_first=True, norm_first=False)
        encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), size.layers, enable_nested_tensor=False)
        decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), size.layers)
        for stack_layer in (*encoder.layers, *decoder.layers):
            stack_layer.dropout = nn.Dropout(size.activation_dropout)  # between linear1's ReLU and linear2
            for attention in (stack_layer.self_attn, getattr(stack_layer, "multihead_attn", None)):
                if attention is not None:
                    attention.dropout = size.attention_dropout  # on the attention weights
        self.transformer = nn.Transformer(
            size.d_model, size.heads, custom_encoder=encoder, custom_decoder=decoder, batch_first=True
        )

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        states = self.embed(ids) * self.scale + self.positions[: ids.shape[1]]  # (batch, len, d_model)
        return F.dropout(states, p=self.dropout, training=self.training)

    def forward(self, input_ids, attention_mask, decoder_input_ids) -> torch.Tensor:
        """`(batch, src_len)`, `(batch, src_len)`, `(batch, tgt_len)` -> logits `(batch, tgt_len, vocab)`."""
        padding = attention_mask == 0  # (batch, src_len), True where padded
        causal = nn.Transformer.generate_square_subsequent_mask(decoder_input_ids.shape[1], device=input_ids.device)
        states = self.transformer(
            self.embed_tokens(input_ids),
            self.embed_tokens(decoder_input_ids),
            tgt_mask=causal,
            src_key_padding_mask=padding,
            memory_key_padding_mask=padding,
            tgt_is_causal=True,
        )  # (batch, tgt_len, d_model)
        return F.linear(states, self.embed.weight)  # (batch, tgt_len, vocab)


def build_contender(kind: str, size: Size, attn_implementation: str | None = None, seed: int = 0) -> nn.Module:
    """A freshly initialised training contender: "ours", "marian" or "torch"; ours and Marian with
    `attn_implementation`, by default the size's (the torch model always runs `nn.MultiheadAttention`); ours with
    the training library's CPU kernels where the size says so.

    Raises:
        ValueError: for another `kind`.
    """
    torch.manual_seed(seed)
    attn_implementation = attn_implementation or size.attn_implementation
    if kind == "ours":
        config = size.config()
        config._attn_implementation = attn_implementation
        model = VaswaniTransformerForConditionalGeneration(config)
        if size.cpu_kernels:
            use_cpu_kernels(model)
        return model
    if kind == "marian":
        config = config_to_marian(size.config())
        config._attn_implementation = attn_implementation
        return MarianMTModel(config)
    if kind == "torch":
        return TorchSeq2Seq(size)
    raise ValueError(f"unknown contender {kind!r}")


def translation_models(
    size: Size, model_dir: str | None, seed: int = 1
) -> tuple[MarianMTModel, VaswaniTransformerForConditionalGeneration, VaswaniTransformerTokenizerFast | None]:
    """(Marian, ours, tokenizer or None), both models in eval mode and holding the same weights.

    With `model_dir`: the trained model saved there, its tokenizer, and its Marian twin (`to_marian`). Without: a
    random Marian of `size` with large weights (`RANDOM_MARIAN_INIT_STD`) and its conversion (`from_marian`).
    """
    if model_dir is not None:
        ours = VaswaniTransformerForConditionalGeneration.from_pretrained(model_dir).eval()
        return to_marian(ours), ours, VaswaniTransformerTokenizerFast.from_pretrained(model_dir)
    torch.manual_seed(seed)
    config = config_to_marian(size.config(training=False))
    config.init_std = RANDOM_MARIAN_INIT_STD
    marian = MarianMTModel(config).eval()
    return marian, from_marian(marian).eval(), None


def prepared_batch(batch: dict, device: str) -> dict[str, torch.Tensor]:
    """`batch` on `device`, with the `decoder_input_ids` that Marian and the torch model take: labels shifted right."""
    ids = VaswaniTransformerConfig()  # <pad> and <s>: the same ids in every contender
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    batch["decoder_input_ids"] = shift_tokens_right(batch["labels"], ids.pad_token_id, ids.decoder_start_token_id)
    return batch


def training_loss(kind: str, model: nn.Module, size: Size, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Label-smoothed cross-entropy (eps_ls, §5.4) of one batch, by the training library's criterion
    (`training.criterion.LabelSmoothedCrossEntropyCriterion`): ours as a preset trains it (blocked with the size's
    `cpu_kernels`), Marian and the torch model in its plain form, `F.cross_entropy(..., label_smoothing=eps_ls)` on
    the logits (Marian's own `labels` loss is unsmoothed). `batch` as `prepared_batch` makes it."""
    criterion = LabelSmoothedCrossEntropyCriterion(LABEL_SMOOTHING, blocked=kind == "ours" and size.cpu_kernels)
    if kind == "torch":
        logits = model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"])  # (batch, tgt, V)
        return criterion.loss(logits, batch["labels"])
    return criterion(model, batch)


def make_training_step(
    kind: str, model: nn.Module, size: Size, batch: dict, precision: str, device: str
) -> Callable[[], None]:
    """One forward + backward + Adam step (the paper's betas and epsilon, §5.3) on `batch`, fp32 or bf16 autocast.

    Every contender gets the optimizer of our training script (`training.recipe.build_optimizer`: PyTorch's fused
    Adam), so that the ratios compare the models and not the optimizers.
    """
    optimizer = build_optimizer(model, lr=1e-5)
    model.train()

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = training_loss(kind, model, size, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)

    return step
