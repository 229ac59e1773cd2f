-- The seed's tables with the seed's column names and types; extra columns follow the
-- seed's, and the keys and provenance tables are the mesh's own.
CREATE TABLE tasks (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  parent_id UUID REFERENCES tasks(id),
  type VARCHAR(64) NOT NULL,
  status VARCHAR(32) NOT NULL DEFAULT 'pending',
  priority INTEGER DEFAULT 0,
  input JSONB NOT NULL,
  output JSONB,
  metadata JSONB DEFAULT '{}',
  created_at TIMESTAMPTZ DEFAULT NOW(),
  updated_at TIMESTAMPTZ DEFAULT NOW(),
  completed_at TIMESTAMPTZ,
  risk_tier VARCHAR(16) NOT NULL DEFAULT 'low',
  data_classification VARCHAR(16) NOT NULL DEFAULT 'internal',
  tenant VARCHAR(128) NOT NULL DEFAULT 'default',
  started_at TIMESTAMPTZ
);
CREATE INDEX tasks_status_priority ON tasks(status, priority);
CREATE INDEX tasks_parent ON tasks(parent_id);
CREATE INDEX tasks_type_completed ON tasks(type, completed_at);

CREATE TABLE agents (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  name VARCHAR(128) UNIQUE NOT NULL,
  version VARCHAR(32) NOT NULL,
  role VARCHAR(64) NOT NULL,
  risk_tier VARCHAR(16) NOT NULL,
  capabilities JSONB NOT NULL,
  model_preference JSONB,
  status VARCHAR(32) DEFAULT 'active',
  registered_at TIMESTAMPTZ DEFAULT NOW(),
  last_heartbeat TIMESTAMPTZ,
  cost_profile JSONB
);

CREATE TABLE tools (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  name VARCHAR(128) UNIQUE NOT NULL,
  version VARCHAR(32) NOT NULL,
  input_schema JSONB NOT NULL,
  output_schema JSONB NOT NULL,
  risk_tier VARCHAR(16) NOT NULL,
  rate_limit INTEGER,
  cost_model JSONB,
  status VARCHAR(32) DEFAULT 'active',
  description TEXT,
  registered_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE api_keys (
  id UUID PRIMARY KEY,
  name VARCHAR(128) NOT NULL,
  key_hash CHAR(64) UNIQUE NOT NULL,
  roles JSONB NOT NULL,
  tenant VARCHAR(128) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  revoked_at TIMESTAMPTZ
);

CREATE TABLE provenance_events (
  seq BIGINT PRIMARY KEY,
  id UUID UNIQUE NOT NULL,
  ts TIMESTAMPTZ NOT NULL,
  action VARCHAR(64) NOT NULL,
  actor VARCHAR(256) NOT NULL,
  task_id UUID,
  subject_type VARCHAR(32) NOT NULL,
  subject_id TEXT,
  payload JSONB NOT NULL,
  prev_hash CHAR(64) NOT NULL,
  hash CHAR(64) NOT NULL
);
CREATE INDEX provenance_events_task ON provenance_events(task_id, seq);

-- The head lives apart from the events so that deleting the newest events shows;
-- its row lock serialises every append across processes.
CREATE TABLE provenance_head (
  id SMALLINT PRIMARY KEY CHECK (id = 1),
  count BIGINT NOT NULL,
  last_hash CHAR(64) NOT NULL
);
INSERT INTO provenance_head (id, count, last_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
