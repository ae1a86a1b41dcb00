"""The built-in PyTorch trainer: models, optimizer, schedules, checkpoints, distributed, merging."""
