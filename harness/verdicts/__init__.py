"""Verdicts between a baseline and a current side: ``compare`` (two run directories) and ``ab``
(two revisions), sharing their words and exit rule (words), their one decision (decide), their
row type (row) and their writers (writers)."""
