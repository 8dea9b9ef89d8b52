"""Draw every attention head of a saved model for one sentence: encoder self-attention, decoder self-attention and
encoder-decoder attention (§3.2.3), as the paper's Figures 3-5 do for a few heads.

    python examples/visualize_attention.py --model outputs/multi30k_en_de_cpu \
        --sentence "A man in a blue shirt is riding a bicycle." --output_dir attention/

The decoder side is the model's greedy translation of the sentence (`<s>` + generated tokens, `</s>` included): one
forward pass over source and translation with `output_attentions=True` (eager attention, which returns the weights)
gives the weights of every layer and head. Writes three PNG files into --output_dir, each a grid of layers (rows) x
heads (columns) of heatmaps with the tokens on the axes (rows: queries, columns: keys; weights from 0 to 1, viridis),
and prints their paths. Draws on a bare `matplotlib.figure.Figure` (no pyplot, no display needed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer


# Output file stem -> (output field of the model, title, query side, key side).
ATTENTION_KINDS = {
    "encoder_self_attention": ("encoder_attentions", "Encoder self-attention", "source", "source"),
    "decoder_self_attention": ("decoder_attentions", "Decoder self-attention (masked)", "target", "target"),
    "encoder_decoder_attention": ("cross_attentions", "Encoder-decoder attention", "target", "source"),
}
AXIS_INCHES = 1.9  # side of one heatmap
LABEL_INCHES = 0.75  # room for the tick labels left of and below each heatmap
TITLE_INCHES = 0.3  # room for each heatmap's title


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """One readable label per token id: its decoded text, with a leading space shown as '▁'."""
    return [tokenizer.decode([token_id]).replace(" ", "▁") or "∅" for token_id in ids]


@torch.no_grad()
def attention_maps(model, tokenizer, sentence: str, max_new_tokens: int = 40) -> dict:
    """Greedy-translate `sentence`, then return the attention weights of one forward pass over source + translation.

    Returns:
        `{"source": labels, "target": labels, "encoder_attentions": (layers, heads, src_len, src_len),
        "decoder_attentions": (layers, heads, tgt_len, tgt_len), "cross_attentions": (layers, heads, tgt_len,
        src_len), "translation": str}`; tensors are float32 on the CPU.
    Raises:
        ValueError: if the sentence is empty.
    """
    if not sentence.strip():
        raise ValueError("--sentence is empty")
    inputs = tokenizer([sentence], return_tensors="pt").to(model.device)  # (1, src_len)
    generated = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=max_new_tokens)  # (1, tgt_len)
    outputs = model(**inputs, decoder_input_ids=generated, output_attentions=True)
    maps = {
        field: torch.cat(getattr(outputs, field), dim=0).float().cpu()  # (layers, heads, queries, keys)
        for field, _, _, _ in ATTENTION_KINDS.values()
    }
    maps["source"] = token_labels(tokenizer, inputs["input_ids"][0].tolist())
    maps["target"] = token_labels(tokenizer, generated[0].tolist())
    maps["translation"] = tokenizer.decode(generated[0], skip_special_tokens=True)
    return maps


def draw_grid(weights: torch.Tensor, query_labels: list[str], key_labels: list[str], title: str, path: Path) -> None:
    """Save a layers x heads grid of heatmaps of `weights` `(layers, heads, queries, keys)` to `path` (PNG)."""
    layers, heads = weights.shape[:2]
    width = heads * (AXIS_INCHES + LABEL_INCHES) + 0.2
    height = layers * (AXIS_INCHES + LABEL_INCHES + TITLE_INCHES) + 0.5  # + the figure title
    figure = Figure(figsize=(width, height), dpi=100)  # no pyplot: no backend, no display, nothing to close
    axes = figure.subplots(layers, heads, squeeze=False)
    # Fixed margins (in inches) instead of tight_layout, which draws every tick label twice.
    figure.subplots_adjust(
        left=LABEL_INCHES / width,
        right=1 - 0.2 / width,
        bottom=LABEL_INCHES / height,
        top=1 - (0.5 + TITLE_INCHES) / height,
        wspace=LABEL_INCHES / AXIS_INCHES,
        hspace=(LABEL_INCHES + TITLE_INCHES) / AXIS_INCHES,
    )
    fontsize = max(3.0, min(7.0, 120.0 / max(len(query_labels), len(key_labels), 1)))
    for layer in range(layers):
        for head in range(heads):
            axis = axes[layer][head]
            axis.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            axis.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=7)
            axis.set_xticks(range(len(key_labels)), key_labels, rotation=90, fontsize=fontsize)
            axis.set_yticks(range(len(query_labels)), query_labels, fontsize=fontsize)
    figure.suptitle(title)
    figure.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module docstring). Returns the exit status: 0, or 1 (model not loadable, empty sentence)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A save_pretrained model directory or Hub repo id.")
    parser.add_argument("--sentence", required=True, help="The source sentence.")
    parser.add_argument("--output_dir", required=True, help="Where the three PNG files go (created if needed).")
    parser.add_argument("--max_new_tokens", type=int, default=40, help="Longest greedy translation, in tokens.")
    args = parser.parse_args(argv)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            args.model, trust_remote_code=True, attn_implementation="eager"
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
        maps = attention_maps(model, tokenizer, args.sentence, args.max_new_tokens)
    except (OSError, ValueError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"translation: {maps['translation']}", file=sys.stderr)
    for stem, (field, title, queries, keys) in ATTENTION_KINDS.items():
        path = output_dir / f"{stem}.png"
        draw_grid(maps[field], maps[queries], maps[keys], title, path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
