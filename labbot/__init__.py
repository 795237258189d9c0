"""labbot: a self-hosted Discord bot that gives every user a sandboxed data analyst."""

__version__ = "0.1.0"
