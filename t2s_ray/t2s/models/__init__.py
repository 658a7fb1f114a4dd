"""Networks: the video DiT (size registry in `sizes.py`) and the text encoder wrapper."""
