"""`logger=...`: where rows and the summary go besides the run directory (none | wandb)."""
