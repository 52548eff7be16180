-- Portal sessions: the product's backend (with an API key) asks for a one-time link to the settings page
-- for one account; opening it exchanges the link's token once for a session credential of that account
-- (api/portal_sessions.py). Only SHA-256 hashes of the link token and of the session credential are kept;
-- the rows stay after expiry or revocation as the account's audit list.
CREATE TABLE portal_sessions (
    id                text PRIMARY KEY,
    account_id        text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    -- The API key that asked for it (api_keys.id; kept as text so the audit row outlives the key).
    created_by_key_id text NOT NULL,
    read_only         boolean NOT NULL DEFAULT false,
    token_hash        bytea NOT NULL UNIQUE,
    session_hash      bytea UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The link must be opened before link_expires_at; the session it opens ends at expires_at.
    link_expires_at   timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    used_at           timestamptz,
    revoked_at        timestamptz,
    CHECK (link_expires_at <= expires_at),
    CHECK ((used_at IS NULL) = (session_hash IS NULL))
);
CREATE INDEX portal_sessions_account_idx ON portal_sessions (account_id, created_at DESC);
