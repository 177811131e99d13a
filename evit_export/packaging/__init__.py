"""App-integration packages, sweeps and reports: built on targets and validation."""
