"""The teacher-information certificate (arXiv 2605.05813, 2605.18224) and its teacher search."""
