"""The GPU serving check: CPU against CUDA provider, tests and benchmark (README.md here)."""
