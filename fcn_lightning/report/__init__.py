"""Paper-style tables and plots from a study's CSV records or its W&B runs."""
