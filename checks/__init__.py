"""The validation checks, one rule per file, and their explicit registry."""
