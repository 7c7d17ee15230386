"""Consent-aware recording (issue 4): consent ledger, remuxing writers, session manifest and timeline."""
