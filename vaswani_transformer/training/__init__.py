"""Training scripts and helpers (data, tokenizer, recipe, loop); not part of the installed package."""
