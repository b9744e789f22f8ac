"""Photos in and out, the model's resampler, files: numpy and Pillow only (the runtime uses them)."""
