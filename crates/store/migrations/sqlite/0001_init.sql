-- Initial schema of the SQLite store. Timestamps are integer Unix microseconds (`*_us` columns)
-- and JSON documents are TEXT.

-- Configuration resources, addressed by (kind, name). `spec` is the resource's JSON body.
CREATE TABLE resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) STRICT;

-- Outgoing references of each resource. The target has no foreign key on purpose: the store
-- checks targets at the end of each change set so that it can name the resource at fault.
CREATE TABLE resource_refs (
    from_kind TEXT NOT NULL,
    from_name TEXT NOT NULL,
    to_kind TEXT NOT NULL,
    to_name TEXT NOT NULL,
    PRIMARY KEY (from_kind, from_name, to_kind, to_name),
    FOREIGN KEY (from_kind, from_name) REFERENCES resources (kind, name) ON DELETE CASCADE
) STRICT;

CREATE INDEX resource_refs_target ON resource_refs (to_kind, to_name);

-- A single row counting the commits that changed resources.
CREATE TABLE config_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;

INSERT INTO config_version (id, version) VALUES (1, 0);

-- The audit log. `event_json` is the canonical JSON that the chain hash covers; the other
-- columns copy fields of it for filtering.
CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT,
    server_workload TEXT,
    client_workload TEXT,
    event_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
) STRICT;

CREATE INDEX audit_events_time ON audit_events (time_us);
CREATE INDEX audit_events_server_workload ON audit_events (server_workload, seq);
CREATE INDEX audit_events_client_workload ON audit_events (client_workload, seq);

-- The last link of the chain, kept apart from `audit_events` so that it survives a purge that
-- deletes every event. Sequence 0 with the genesis hash means that no event was ever appended.
CREATE TABLE audit_chain_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
) STRICT;

INSERT INTO audit_chain_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed statements that the chain up to `seq` ends in `head_hash`.
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    head_hash TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    signature TEXT NOT NULL
) STRICT;

-- Signing keys in every state. Rows are never deleted, because verifying old audit checkpoints
-- needs their public keys; removal only clears `encrypted_private_key`.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    state TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    encrypted_private_key BLOB,
    created_at_us INTEGER NOT NULL,
    activates_at_us INTEGER,
    retired_at_us INTEGER,
    remove_after_us INTEGER
) STRICT;

-- Admin tokens, stored only as hashes. A name is unique among tokens that are not revoked.
CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_us INTEGER NOT NULL,
    revoked_at_us INTEGER
) STRICT;

CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens (name) WHERE revoked_at_us IS NULL;

-- Server settings such as the key-encryption-key fingerprint and the trust domain.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
