"""Evaluation: success rates with Wilson intervals (`stats`), policies on the simulated robot (`policy_eval`)."""
