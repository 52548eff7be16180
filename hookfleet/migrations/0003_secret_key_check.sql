-- One value sealed with HOOKFLEET_SECRET_KEY when a role first starts on this database
-- (hookfleet/secret_keys.py). A role whose key does not open it refuses to start, so a wrong key is
-- found at startup, not at the first webhook whose secret does not decrypt.
CREATE TABLE secret_key_check (
    id            smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    check_value   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
