"""The study on this machine: worker processes, the study's lock, the workers' store."""
