"""The model: an OpenAI-compatible client, its tool, prompts, tokens, cost and the catalog."""
