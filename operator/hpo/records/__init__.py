"""What a study writes to its store and reads back: ledger, live status, warm start, report."""
