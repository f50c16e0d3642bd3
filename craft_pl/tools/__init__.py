"""Command-line tools around training: campaigns of runs, export to Hugging Face folders, model conversion."""
