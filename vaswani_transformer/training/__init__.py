"""The training library: the paper's recipe (§5, §6.1) around `VaswaniTransformerForConditionalGeneration`.

Installed with the `[train]` extra (accelerate, datasets, evaluate, sacrebleu, PyYAML). The model files of the parent
package never import it, so a saved model still loads as remote code where only torch and transformers are present.

- `arguments`: the command-line and YAML arguments; model-size flags derived from `VaswaniTransformerConfig`.
- `data`: reading parallel text (plain/gzip files, JSON lines, `datasets`); `preprocessing`: tokenize and filter.
- `batching`: §5.1 token batches and the collator; `recipe`: Adam and the Eq. 3 schedule (§5.3).
- `checkpoints`: atomic checkpoints and exact resumption; `averaging`: §6.1 checkpoint averaging.
- `evaluation`: beam-search translation and sacreBLEU/chrF; `train`: the accelerate training program.
- `tokenizer_training`, `hub`, `bleu_curve`: the shared BPE vocabulary, Hub upload, the BLEU-against-time plot.
- `allocator`: glibc's malloc set to keep freed memory for reuse during CPU training (no page faults a step).

Each module with a `main` is a command (`vaswani-train`, `vaswani-evaluate`, ...) and a thin script in `training/`.
"""
