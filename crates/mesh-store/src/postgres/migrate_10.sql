-- Agents: a declared concurrency (busy when that many leases are held), drains, and
-- the A2A endpoint of agents imported from an Agent Card.
ALTER TABLE agents ADD COLUMN max_concurrency INTEGER;
ALTER TABLE agents ADD COLUMN draining_since TIMESTAMPTZ;
ALTER TABLE agents ADD COLUMN a2a_endpoint JSONB;
-- Leases held per agent, for matching, busy and drains.
CREATE INDEX tasks_running_by_agent ON tasks(leased_by) WHERE status = 'running';
