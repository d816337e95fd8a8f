-- Agents and the one-time join tokens that admit them. Only hashes of secrets are stored.
CREATE TABLE agent_join_tokens (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    used_at_us INTEGER,
    revoked_at_us INTEGER
) STRICT;

CREATE INDEX agent_join_tokens_agent ON agent_join_tokens (agent);

-- One row per agent name. `credential_hash` is the hash of the agent's current short-lived
-- credential; it is NULL once the agent is evicted.
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    credential_hash TEXT UNIQUE,
    credential_expires_at_us INTEGER,
    joined_at_us INTEGER NOT NULL,
    renewed_at_us INTEGER NOT NULL,
    evicted_at_us INTEGER
) STRICT;
