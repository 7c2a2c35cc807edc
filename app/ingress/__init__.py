"""Provider webhooks straight in: signed deliveries on /in/<route>, keyed by their own ids."""
