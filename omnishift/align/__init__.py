"""Speech alignment of the adaptor before Stage 1 (issue 11): data, objectives, training."""
