"""medpriv: private clinical prediction models, and measurements of how much they leak."""

__version__ = "0.1.0"
