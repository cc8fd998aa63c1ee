"""Landing zone: payer contracts, file discovery and contract conformance."""
