-- A notification address gets mail only once it is confirmed: setting it stores it unconfirmed and mails
-- it a one-time code (only the code's SHA-256 is kept, until it expires or is used; wrong tries counted),
-- `POST /v1/account/notification-email/confirm` with the code confirms it (api/notifications.py).
-- Addresses set before this version were in use already and stay as they were: confirmed.
ALTER TABLE accounts
    ADD COLUMN notification_email_confirmed_at timestamptz,
    ADD COLUMN confirmation_code_hash bytea,
    ADD COLUMN confirmation_expires_at timestamptz,
    ADD COLUMN confirmation_tries integer NOT NULL DEFAULT 0,
    ADD COLUMN confirmation_sent_at timestamptz;
UPDATE accounts SET notification_email_confirmed_at = now() WHERE notification_email IS NOT NULL;
