-- Per-webhook flow settings, enforced by the webhook's one owner in the delivery stage
-- (docs/architecture.md#delivery-stage): an optional rate limit, and opt-in ordered delivery.
ALTER TABLE webhooks
    ADD COLUMN rate_limit_per_s integer CHECK (rate_limit_per_s BETWEEN 1 AND 10000),
    ADD COLUMN ordering text NOT NULL DEFAULT 'unordered' CHECK (ordering IN ('unordered', 'fifo'));
