"""What only the notebooks draw: plotting helpers and explanations built on the library's own functions.

One module per notebook topic (``architecture``, ``pretraining``, ``pruning``, ``cascade``, ``longctx``,
``results``), plus ``explain`` (the numbers notebook 01 plots), ``tokens`` (token boxes) and ``style``
(one figure style and one way to save). matplotlib is imported inside the functions: it is an optional
dependency of the library.
"""
