"""lm-eval task folder for the DoRA commonsense suite (filled in by the lm-eval issue)."""
