"""The pricing plugin: Meta rate cards, volume tiers, platform fee rules and quotations."""
