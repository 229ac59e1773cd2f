-- Queue state: attempts, backoff, deadlines, idempotency, fenced leases.
ALTER TABLE tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN available_at TIMESTAMPTZ;
UPDATE tasks SET available_at = created_at;
ALTER TABLE tasks ALTER COLUMN available_at SET DEFAULT NOW();
ALTER TABLE tasks ALTER COLUMN available_at SET NOT NULL;
ALTER TABLE tasks ADD COLUMN deadline TIMESTAMPTZ;
ALTER TABLE tasks ADD COLUMN idempotency_key VARCHAR(128);
ALTER TABLE tasks ADD COLUMN leased_by UUID;
ALTER TABLE tasks ADD COLUMN lease_token UUID;
ALTER TABLE tasks ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE tasks ADD COLUMN last_failed_agent UUID;
ALTER TABLE tasks ADD COLUMN last_error TEXT;
CREATE INDEX tasks_claimable ON tasks(status, type, available_at);
CREATE INDEX tasks_lease_expiry ON tasks(status, lease_expires_at);
CREATE INDEX tasks_deadline ON tasks(status, deadline);
CREATE UNIQUE INDEX tasks_idempotency ON tasks(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
