"""Parts several families share: the Hugging Face SigLIP tower (siglip.py) and the original files of checkpoints
whose config.json names their version (versioned.py)."""
