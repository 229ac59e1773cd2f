-- Events bus on PostgreSQL: per-topic sequences, consumer groups with pending
-- deliveries, and named cursors (how far a relay has read).
CREATE TABLE bus_topics (topic VARCHAR(128) PRIMARY KEY, last_seq BIGINT NOT NULL);
CREATE TABLE bus_events (
  topic VARCHAR(128) NOT NULL,
  seq BIGINT NOT NULL,
  id UUID NOT NULL,
  ts TIMESTAMPTZ NOT NULL,
  payload JSONB NOT NULL,
  PRIMARY KEY (topic, seq)
);
CREATE TABLE bus_groups (
  topic VARCHAR(128) NOT NULL,
  group_name VARCHAR(128) NOT NULL,
  delivered_seq BIGINT NOT NULL,
  PRIMARY KEY (topic, group_name)
);
CREATE TABLE bus_pending (
  topic VARCHAR(128) NOT NULL,
  group_name VARCHAR(128) NOT NULL,
  seq BIGINT NOT NULL,
  consumer VARCHAR(128) NOT NULL,
  delivered_at TIMESTAMPTZ NOT NULL,
  deliveries INTEGER NOT NULL,
  PRIMARY KEY (topic, group_name, seq)
);
CREATE TABLE bus_cursors (name VARCHAR(128) PRIMARY KEY, position BIGINT NOT NULL);
