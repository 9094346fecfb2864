"""Helpers for the executable IOI circuit book (Wang et al., ICLR 2023).

One module per concept: ``models`` (loading), ``dataset`` (p_IOI, p_ABC, adversarial),
``metrics`` (logit difference and friends), ``patching``, ``ablation``, ``scores``,
``plots`` (the shared Altair theme), ``widgets`` and ``paper`` (the paper's numbers, for
comparison only).
"""

__version__ = "0.1.0"
