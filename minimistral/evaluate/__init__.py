"""Evaluation (paper §4): the one next-token loss and teacher-forced scorer, bits per byte, n-gram baselines,
task metrics (Table 3's layout), and scores cached by checkpoint content."""
