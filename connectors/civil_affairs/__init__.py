"""Civil affairs connector: children-in-difficulty case exports -> welfare follow-up referrals."""
