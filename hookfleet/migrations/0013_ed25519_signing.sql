-- Opt-in Ed25519 signatures (Standard Webhooks `v1a`): the webhook's private key, sealed like its secret
-- (AES-GCM bound to the webhook id and this column, hookfleet/secretbox.py); NULL: the webhook signs with
-- HMAC only. After a key rotation the previous key keeps signing beside the new one until
-- previous_signing_key_expires_at. The public key is derived from the private key when shown.
ALTER TABLE webhooks
    ADD COLUMN signing_key_ciphertext bytea,
    ADD COLUMN previous_signing_key_ciphertext bytea,
    ADD COLUMN previous_signing_key_expires_at timestamptz;
