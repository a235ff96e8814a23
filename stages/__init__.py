"""DVC stages that fetch, extract, place and mix the LLaVA-family training data."""
