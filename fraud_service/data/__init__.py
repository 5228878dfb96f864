"""The data platform: the contract, validation, ingest, the warehouse of snapshots, label sync."""
