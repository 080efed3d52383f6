"""lambdad: a self-hosted Function-as-a-Service daemon."""

__version__ = "0.1.0"
