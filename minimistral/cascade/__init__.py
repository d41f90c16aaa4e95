"""Cascade Distillation (paper §3.1, Algorithm 1, Figures 1-2): the steps per child, the paper's claims at equal
tokens, and the report (every checkpoint scored, the Table 3 and Figure 2 analogues)."""
