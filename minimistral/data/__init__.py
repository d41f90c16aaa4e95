"""Pretraining data (paper §3): real prose and math from registry packages, retrieval documents, a Tekken-layout
tokenizer, and the packed corpus every stage reads."""
