"""The training library: the paper's recipe (§5, §6.1) around `VaswaniTransformerForConditionalGeneration`.

Installed with the `[train]` extra (accelerate, datasets, evaluate, sacrebleu, PyYAML). The model files of the parent
package never import it, so a saved model still loads as remote code where only torch and transformers are present.

- `arguments`: the training arguments (HfArgumentParser dataclasses, YAML presets); model-size flags from the config.
- `data`: reading parallel text (plain/gzip files, JSON lines, `datasets`); `preprocessing`: tokenize and filter.
- `vocabulary`: the shared BPE vocabulary of a run (trained once, cached); `tokenizer_training`: training it.
- `batching`: §5.1 token batches (the core's `token_batch_bounds`) and the collator; `recipe`: Adam, Eq. 3 (§5.3)
  and §6.1's decoding settings; `criterion`: the §5.4 label-smoothed loss the loop minimises.
- `checkpoints`: atomic checkpoints and exact resumption; `averaging`: §6.1 checkpoint averaging.
- `evaluation`: beam-search translation, validation and sacreBLEU/chrF; `train`: the accelerate training program.
- `telemetry`: log.jsonl lines and memory; `distributed`: agreement across ranks; `fsdp`: FSDP2 on CPU.
- `hub`, `model_card`, `bleu_curve`: Hub upload, the model card, the BLEU-against-time plot.
- CPU speed options the CPU presets turn on (`--cpu_kernels`, `--keep_freed_memory`): `cpu_kernels` (the fast
  dropout kernel; the row-blocked loss is `criterion`'s) and `allocator` (glibc keeps freed memory for reuse).
- The accelerator's step (`--torch_compile`): `compilation` (forward, loss and backward as one compiled graph with
  dynamic shapes); the chunked output projection + loss is `criterion`'s `output_chunks`.

The commands: `train` (`vaswani-train`), `evaluate_cli` (`vaswani-evaluate`) and `cli` (the other commands'
arguments and console scripts), each with a thin script in `training/`; every other module is a library.
"""
