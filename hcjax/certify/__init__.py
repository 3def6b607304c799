"""The teacher-information certificate (arXiv 2605.05813, 2605.18224) and its teacher search.

Modules: ``certificates`` (teacher information, alignment loss, the certificate, closed-form
code; re-exports the witness names), ``witness`` (the fixed witness head), ``teachers``
(PCA-GMM teacher search).
"""
