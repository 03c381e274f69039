"""nasdet."""
