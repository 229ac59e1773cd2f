-- Claims take the highest-priority candidates straight from an index.
CREATE INDEX tasks_claim_priority ON tasks(status, type, priority DESC, available_at);
