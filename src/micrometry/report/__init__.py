"""Self-contained HTML reports shared by both jobs."""
