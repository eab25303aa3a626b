"""The checkpoint format: a model's and a training run's state <-> one safetensors file."""
