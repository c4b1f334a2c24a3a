"""Hotline connector: the 知心365 call log -> crisis referrals (emergency basis) and status updates back."""
