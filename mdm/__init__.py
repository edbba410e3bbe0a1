"""mdm: masked diffusion models on self-generated puzzles, with the EB-Sampler family."""
