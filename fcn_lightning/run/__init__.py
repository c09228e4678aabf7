"""What every run shares: the error boundary, the run directory, loggers, processes."""
