"""End-to-end studies built from the platform's parts (pre-training: I vs S, widths from ID)."""
