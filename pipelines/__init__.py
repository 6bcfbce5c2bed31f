"""pipelines: a Prefect 2 flow library for data pipelines you can trust."""

__version__ = "0.1.0"
