"""Test factories shipped with the package: deterministic media and manifests for tests."""
