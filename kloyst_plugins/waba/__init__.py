"""The waba plugin: WhatsApp Business Accounts and phone numbers — own WABAs with encrypted tokens, numbers
assigned from the platform's shared WABA, sync from Meta."""
