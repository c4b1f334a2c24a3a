"""Street/town centre connector: the guidance centre's case records -> referrals onwards (CAMHS, district)."""
