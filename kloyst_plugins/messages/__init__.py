"""The messages plugin: template messages sent through Meta at each number's throughput, with retries, dead
letters, delivery statuses and inbound messages from webhooks."""
