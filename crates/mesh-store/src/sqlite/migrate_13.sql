-- Queue indexes hold only the tasks their queries look for (queued, running or
-- completed ones; subtasks), so a task's every state change no longer rewrites an
-- entry in each of them: the claim, lease-expiry, deadline and duration queries all
-- name the status these conditions require.
DROP INDEX tasks_claimable;
DROP INDEX tasks_claim_priority;
DROP INDEX tasks_lease_expiry;
DROP INDEX tasks_deadline;
DROP INDEX tasks_type_completed;
DROP INDEX tasks_parent;
CREATE INDEX tasks_claimable ON tasks(type, available_at) WHERE status = 'queued';
CREATE INDEX tasks_claim_priority ON tasks(type, priority DESC, available_at) WHERE status = 'queued';
CREATE INDEX tasks_lease_expiry ON tasks(lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_deadline ON tasks(deadline) WHERE status = 'queued' AND deadline IS NOT NULL;
CREATE INDEX tasks_type_completed ON tasks(type, completed_at) WHERE status = 'completed';
CREATE INDEX tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;
