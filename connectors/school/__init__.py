"""School screening connector: a screening platform's export (CSV/XLSX) -> scored -> referral Bundles."""
