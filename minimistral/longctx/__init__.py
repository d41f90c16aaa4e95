"""The long-context stage (paper §2, §3.1): position scaling variants (YaRN, linear, none, sliding window),
the query temperature, per-position loss, passkey retrieval, and the stage's study."""
