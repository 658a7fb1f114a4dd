"""t2s-ray: ablation studies of text-to-sign video diffusion models on Ray Tune."""
__version__ = "0.1.0"
