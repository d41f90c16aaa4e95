"""The Ministral 3 decoder (paper §2): config, RoPE/YaRN and the query temperature, the model, HF-format I/O,
generation with the KV cache, exact parameter counts."""
