"""How a map is made: the explainer, its options and result, layers, tokens, outputs, scores."""
