"""Detection data: one in-memory record, one reader per annotation format, MindRecord."""
