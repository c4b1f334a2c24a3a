"""Qixin referral hub: consent-scoped referrals between agencies over Apache Kafka."""

__version__ = "0.1.0"
