"""Speech alignment of the adaptor before Stage 1 : data, objectives, training."""
