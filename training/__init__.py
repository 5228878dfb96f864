"""Dataset assembly, training, evaluation and the data generators that feed them."""
