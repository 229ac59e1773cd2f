-- Embedded schema: the seed's tables with SQLite types (UUIDs and timestamps as
-- RFC 3339 text, JSON as text), plus keys and the provenance log.
CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  parent_id TEXT REFERENCES tasks(id),
  type TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  priority INTEGER NOT NULL DEFAULT 0,
  input TEXT NOT NULL,
  output TEXT,
  metadata TEXT NOT NULL DEFAULT '{}',
  risk_tier TEXT NOT NULL DEFAULT 'low',
  data_classification TEXT NOT NULL DEFAULT 'internal',
  tenant TEXT NOT NULL DEFAULT 'default',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  started_at TEXT,
  completed_at TEXT
);
CREATE INDEX tasks_status_priority ON tasks(status, priority);
CREATE INDEX tasks_parent ON tasks(parent_id);
CREATE INDEX tasks_type_completed ON tasks(type, completed_at);

CREATE TABLE agents (
  id TEXT PRIMARY KEY,
  name TEXT UNIQUE NOT NULL,
  version TEXT NOT NULL,
  role TEXT NOT NULL,
  risk_tier TEXT NOT NULL,
  capabilities TEXT NOT NULL,
  model_preference TEXT,
  cost_profile TEXT,
  status TEXT NOT NULL DEFAULT 'active',
  registered_at TEXT NOT NULL,
  last_heartbeat TEXT
);

CREATE TABLE tools (
  id TEXT PRIMARY KEY,
  name TEXT UNIQUE NOT NULL,
  version TEXT NOT NULL,
  description TEXT,
  input_schema TEXT NOT NULL,
  output_schema TEXT NOT NULL,
  risk_tier TEXT NOT NULL,
  rate_limit INTEGER,
  cost_model TEXT,
  status TEXT NOT NULL DEFAULT 'active',
  registered_at TEXT NOT NULL
);

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  key_hash TEXT UNIQUE NOT NULL,
  roles TEXT NOT NULL,
  tenant TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);

CREATE TABLE provenance_events (
  seq INTEGER PRIMARY KEY,
  id TEXT UNIQUE NOT NULL,
  ts TEXT NOT NULL,
  action TEXT NOT NULL,
  actor TEXT NOT NULL,
  task_id TEXT,
  subject_type TEXT NOT NULL,
  subject_id TEXT,
  payload TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX provenance_events_task ON provenance_events(task_id, seq);

-- The head lives apart from the events so that deleting the newest events shows.
CREATE TABLE provenance_head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  count INTEGER NOT NULL,
  last_hash TEXT NOT NULL
);
INSERT INTO provenance_head (id, count, last_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
