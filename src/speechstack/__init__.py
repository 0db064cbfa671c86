"""speechstack: fold-split audio classification, stacked out-of-fold predictions, submissions."""

__version__ = "0.1.0"
