"""Scoring a return: request parsing, the model, policy, rules and lists, explanations, the assessor."""
