"""Figure functions: metrics or results in, figure out. Nothing here runs a model."""
