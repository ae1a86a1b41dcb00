"""Data: sources, built-in corpora, tokenizer, packing, mixture sampling, decontamination."""
