-- API keys get a public id (to list and revoke them without showing the key), the last 4 characters
-- of the key (to recognise it), when they were last used, and when they were revoked. A revoked key is
-- kept for the record; authentication reads this table on every request, so a revocation applies to
-- every API replica at once.
ALTER TABLE api_keys
    ADD COLUMN id text,
    ADD COLUMN hint text NOT NULL DEFAULT '',
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN revoked_at timestamptz;
UPDATE api_keys SET id = 'key_' || substr(encode(key_hash, 'hex'), 1, 26) WHERE id IS NULL;
ALTER TABLE api_keys ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX api_keys_id_idx ON api_keys (id);
CREATE INDEX api_keys_account_idx ON api_keys (account_id, created_at);
