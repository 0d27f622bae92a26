"""Auto-replies: keyword rules, an away message outside business hours, opt-out and opt-in confirmations."""
