"""Small helpers shared by every nasdet package."""
