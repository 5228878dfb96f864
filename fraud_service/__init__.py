"""The core of the returns-fraud service: domain, services, adapters and configuration."""

__version__ = "0.1.0"
