"""Verdicts between a baseline and a current side: ``compare`` (two run directories) and ``ab``
(two revisions), sharing their words (words), their row type (row) and their writers (writers)."""
