-- Initial schema: organisations, API keys, usage records, admin audit log.
-- Applied once by llm_gateway.db.migrate() inside a transaction; never edit after release
-- (the runner refuses to start if an applied migration's checksum changed): add 0002_*.sql instead.

CREATE TABLE orgs (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tier            text NOT NULL DEFAULT 'standard',
    -- NULL limit or quota = unlimited. Quota defaults are the seed defaults of every new org.
    rpm             integer CHECK (rpm > 0),
    tpm             integer CHECK (tpm > 0),
    daily_tokens    bigint DEFAULT 10000000 CHECK (daily_tokens > 0),
    daily_requests  bigint DEFAULT 100000 CHECK (daily_requests > 0),
    monthly_tokens  bigint DEFAULT 300000000 CHECK (monthly_tokens > 0),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id          text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    org_id          text NOT NULL REFERENCES orgs (id) ON DELETE RESTRICT,
    -- HMAC-SHA256(pepper, full key) or SHA-256(full key): the secret itself is never stored.
    key_hash        bytea NOT NULL CHECK (length(key_hash) = 32),
    name            text NOT NULL DEFAULT '',
    allowed_models  text[],                -- NULL = every catalog model
    tier            text,                  -- NULL = the org's tier
    rpm             integer CHECK (rpm > 0),
    tpm             integer CHECK (tpm > 0),
    burst           integer CHECK (burst > 0),
    max_inflight    integer CHECK (max_inflight > 0),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    last_used_at    timestamptz
);
CREATE INDEX api_keys_org_id_idx ON api_keys (org_id);

-- No foreign keys on org_id/key_id on purpose: one usage row for a since-deleted org must not
-- fail a whole metering batch; usage is an append-only ledger, not part of the key graph.
CREATE TABLE usage_records (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id          text NOT NULL UNIQUE,   -- replays of a spilled batch are idempotent
    org_id              text NOT NULL,
    key_id              text NOT NULL,
    model               text NOT NULL,
    backend             text,
    prompt_tokens       integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens   integer NOT NULL CHECK (completion_tokens >= 0),
    latency_ms          double precision NOT NULL,
    ttft_ms             double precision,
    status              integer NOT NULL,
    cache_hit           boolean NOT NULL DEFAULT false,
    cost_usd            numeric(20, 10) NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL
);
CREATE INDEX usage_records_org_created_idx ON usage_records (org_id, created_at);
CREATE INDEX usage_records_created_idx ON usage_records (created_at);  -- retention job

CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    action       text NOT NULL,
    target_type  text NOT NULL,
    target_id    text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,   -- never a secret or a key hash
    remote_addr  text
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id);
