"""What a trial's curves say (diagnosis) and what the next sweep should change (advice)."""
