"""Runtime policies of a training run, independent of what is trained: CPU threads, numeric
precision, preemption (SIGTERM/SLURM), throughput, the run's log, and gathering across ranks."""
