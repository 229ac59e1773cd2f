-- Embedded events bus: per-topic sequences, consumer groups with pending deliveries,
-- and named cursors (how far a relay has read).
CREATE TABLE bus_topics (topic TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE bus_events (
  topic TEXT NOT NULL,
  seq INTEGER NOT NULL,
  id TEXT NOT NULL,
  ts TEXT NOT NULL,
  payload TEXT NOT NULL,
  PRIMARY KEY (topic, seq)
);
CREATE TABLE bus_groups (
  topic TEXT NOT NULL,
  group_name TEXT NOT NULL,
  delivered_seq INTEGER NOT NULL,
  PRIMARY KEY (topic, group_name)
);
CREATE TABLE bus_pending (
  topic TEXT NOT NULL,
  group_name TEXT NOT NULL,
  seq INTEGER NOT NULL,
  consumer TEXT NOT NULL,
  delivered_at TEXT NOT NULL,
  deliveries INTEGER NOT NULL,
  PRIMARY KEY (topic, group_name, seq)
);
CREATE TABLE bus_cursors (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
