"""The training machinery every model shares: configs, checkpoints, EMA and the loop."""
