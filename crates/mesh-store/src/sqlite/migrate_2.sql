-- Queue state: attempts, backoff, deadlines, idempotency, fenced leases.
ALTER TABLE tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN available_at TEXT;
UPDATE tasks SET available_at = created_at;
ALTER TABLE tasks ADD COLUMN deadline TEXT;
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
ALTER TABLE tasks ADD COLUMN leased_by TEXT;
ALTER TABLE tasks ADD COLUMN lease_token TEXT;
ALTER TABLE tasks ADD COLUMN lease_expires_at TEXT;
ALTER TABLE tasks ADD COLUMN last_failed_agent TEXT;
ALTER TABLE tasks ADD COLUMN last_error TEXT;
CREATE INDEX tasks_claimable ON tasks(status, type, available_at);
CREATE INDEX tasks_lease_expiry ON tasks(status, lease_expires_at);
CREATE INDEX tasks_deadline ON tasks(status, deadline);
CREATE UNIQUE INDEX tasks_idempotency ON tasks(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
