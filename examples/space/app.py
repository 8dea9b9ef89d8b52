"""A demo page for a saved translation model: type a sentence, get the n best translations with their scores.

    python examples/space/app.py --model outputs/multi30k_en_de_cpu          # http://127.0.0.1:7860
    VASWANI_MODEL=org/multi30k-en-de python examples/space/app.py           # a Hub model id
    python examples/space/app.py --model outputs/run --server_name 0.0.0.0 --server_port 8080

A Gradio app (a Hugging Face Space as it is: this folder holds the Space's README header and requirements.txt; see
docs/demo.md). The model is loaded with transformers' `pipeline("translation", model=..., trust_remote_code=True)`,
from the files saved beside the weights (model, tokenizer and pipeline code: `pipeline_translation.py`), so the page
needs torch, transformers and gradio, not this package. It translates on the GPU when there is one.

Decoding is the model's own: the beam size, length penalty and output length of its `generation_config.json`
(beam 4, alpha 0.6 after `vaswani-train`, §6.1 of the paper); the page only chooses how many of the beam's finished
hypotheses to show (`num_return_sequences`, at most the beam size). Each comes with the score beam search ranks it by:
the sum of its token log-probabilities divided by length^alpha (the pipeline's `return_scores=True`); higher is better.

Arguments (each also an environment variable, for a Space, whose settings can set variables but not arguments):
`--model` (`VASWANI_MODEL`): a `save_pretrained` folder or a Hub model id; `--server_name` (`GRADIO_SERVER_NAME`,
default 127.0.0.1) and `--server_port` (`GRADIO_SERVER_PORT`, default 7860): where the page is served.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field

import gradio as gr
import torch
from transformers import HfArgumentParser, pipeline


# The element ids the page gives its parts, for a browser test or a stylesheet to find them.
SOURCE_ID, COUNT_ID, BUTTON_ID, BEST_ID, NBEST_ID = "source", "count", "translate", "best", "nbest"
NBEST_HEADERS = ["rank", "translation", "score"]
EXAMPLES = ["A man is riding a bicycle.", "Two dogs are playing in the snow."]


@dataclass
class DemoArguments:
    """Arguments of examples/space/app.py (parsed by `transformers.HfArgumentParser`)."""

    model: str | None = field(
        default=os.environ.get("VASWANI_MODEL"),
        metadata={"help": "A save_pretrained folder or Hub model id (default: $VASWANI_MODEL)."},
    )
    server_name: str = field(
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        metadata={"help": "Address to serve on (0.0.0.0 for every interface)."},
    )
    server_port: int = field(
        default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), metadata={"help": "Port to serve on."}
    )


def load_translator(model: str):
    """The model's translation pipeline, on the first GPU if there is one (`pipeline(..., trust_remote_code=True)`).

    Raises:
        OSError: if `model` is neither a folder holding a saved model nor a Hub model id (from transformers).
        ValueError: if the pipeline saved with the model cannot return scores (saved by an older version of the
            package; the message says how to refresh it).
    """
    device = 0 if torch.cuda.is_available() else -1
    translator = pipeline("translation", model=model, trust_remote_code=True, device=device)
    if "return_scores" not in inspect.signature(translator._sanitize_parameters).parameters:
        raise ValueError(
            f"the translation pipeline saved with {model} cannot return scores (an older version): refresh it with "
            f"vaswani_transformer.save_translation_pipeline({model!r}) and upload it again (docs/demo.md)"
        )
    return translator


def n_best(translator, text: str, count: int) -> tuple[str, list[list]]:
    """The best translation of `text` and the table of the `count` best: rows [rank, translation, score].

    Args:
        translator: the pipeline (`load_translator`).
        text: the source sentence; empty or blank text gives ("", []).
        count: how many of the beam's hypotheses to list (1 to the generation config's `num_beams`).
    Returns:
        (best translation, rows from best to worst; score rounded to 4 decimals for display).
    """
    if not text.strip():
        return "", []
    records = translator(text, num_return_sequences=int(count), return_scores=True)
    rows = [[rank, record["translation_text"], round(record["score"], 4)] for rank, record in enumerate(records, 1)]
    return records[0]["translation_text"], rows


def build_demo(translator, title: str) -> gr.Blocks:
    """The page: a source box, a Translate button, the best translation and the n-best table with scores.

    Args:
        translator: the pipeline (`load_translator`); its model's `generation_config` sets the decoding.
        title: the heading (the model's name).
    """
    config = translator.model.generation_config
    beams = config.num_beams or 1
    search = f"beam search, {beams} beams, length penalty {config.length_penalty}" if beams > 1 else "greedy search"
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"# {title}\n"
            f"The Transformer of *Attention Is All You Need* (Vaswani et al., 2017). Decoding: {search}, "
            "from the model's `generation_config.json`. Scores: log-probability / length^alpha (higher is better)."
        )
        source = gr.Textbox(label="Source sentence", lines=2, elem_id=SOURCE_ID)
        count = gr.Slider(
            1, max(beams, 2), value=beams, step=1, label="Translations to list", visible=beams > 1, elem_id=COUNT_ID
        )
        button = gr.Button("Translate", variant="primary", elem_id=BUTTON_ID)
        best = gr.Textbox(label="Translation", interactive=False, elem_id=BEST_ID)
        table = gr.Dataframe(headers=NBEST_HEADERS, label="n best, with scores", interactive=False, elem_id=NBEST_ID)
        gr.Examples(EXAMPLES, inputs=source)

        def translate(text: str, number: int) -> tuple[str, list[list]]:
            return n_best(translator, text, number)

        button.click(translate, inputs=[source, count], outputs=[best, table])
        source.submit(translate, inputs=[source, count], outputs=[best, table])
    return demo


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, load the model and serve the page until interrupted.

    Raises:
        SystemExit: with a one-line message when no model is given.
        OSError, ValueError: if the model cannot be loaded or cannot return scores (`load_translator`).
    """
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(argv)
    if not args.model:
        raise SystemExit("app.py: error: give --model (a saved model folder or Hub id) or set VASWANI_MODEL")
    translator = load_translator(args.model)
    demo = build_demo(translator, title=args.model.rstrip("/").rsplit("/", 1)[-1])
    demo.launch(server_name=args.server_name, server_port=args.server_port)


if __name__ == "__main__":
    main()
