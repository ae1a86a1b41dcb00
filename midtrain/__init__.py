"""midtrain: published LLM mid-training recipes as validated data you can browse, plan and reproduce."""

__version__ = "0.1.0"
