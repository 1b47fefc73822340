"""Conditional GANs: losses, generators and discriminators, the training task, the gradient-norm diagnostic."""
