"""Adapters for real clients' native webhooks (SPEC §4.3): each turns its client's payload into
the receiver's `SmsToStore` after checking the client's signature."""
