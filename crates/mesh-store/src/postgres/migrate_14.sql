-- The embedded bus reads lifecycle topics straight from the provenance log instead of
-- keeping a relayed copy of each event: their offsets become log positions. Consumer
-- groups keep their place (each position maps to the log position of the event it
-- named, which its relayed copy recorded), then the copies go.
CREATE TEMPORARY TABLE lifecycle_topics (topic VARCHAR(128) PRIMARY KEY);
INSERT INTO lifecycle_topics (topic) VALUES
  ('task.created'), ('task.queued'), ('task.started'), ('task.completed'), ('task.failed'),
  ('task.retry_scheduled'), ('task.cancelled'), ('task.reviewed'), ('task.needs_approval'), ('task.approved'),
  ('task.rejected'), ('task.waiting'), ('task.resumed'), ('task.requeued'), ('task.yield_requested'),
  ('task.yielded'), ('task.subtask_created'), ('agent.registered'), ('agent.recovered'), ('agent.retired'),
  ('agent.heartbeat_expired'), ('agent.draining'), ('agent.drained'), ('agent.busy'), ('agent.available'),
  ('agent.probe_failed'), ('agent.process_exited'), ('agent.spawned'), ('tool.registered'), ('tool.updated'),
  ('tool.retired'), ('tool.recovered'), ('tool.unhealthy'), ('tool.call');

-- Through negatives, so no row takes a position another still holds.
UPDATE bus_pending SET seq = -(
  SELECT (e.payload->>'provenanceSeq')::bigint FROM bus_events e
  WHERE e.topic = bus_pending.topic AND e.seq = bus_pending.seq)
WHERE topic IN (SELECT topic FROM lifecycle_topics)
  AND EXISTS (SELECT 1 FROM bus_events e WHERE e.topic = bus_pending.topic AND e.seq = bus_pending.seq);
UPDATE bus_pending SET seq = -seq WHERE seq < 0;

UPDATE bus_groups SET delivered_seq = (
  SELECT (e.payload->>'provenanceSeq')::bigint FROM bus_events e
  WHERE e.topic = bus_groups.topic AND e.seq = bus_groups.delivered_seq)
WHERE topic IN (SELECT topic FROM lifecycle_topics)
  AND EXISTS (SELECT 1 FROM bus_events e WHERE e.topic = bus_groups.topic AND e.seq = bus_groups.delivered_seq);

DELETE FROM bus_events WHERE topic IN (SELECT topic FROM lifecycle_topics);
DELETE FROM bus_topics WHERE topic IN (SELECT topic FROM lifecycle_topics);
DELETE FROM bus_cursors WHERE name = 'provenance-relay';
DROP TABLE lifecycle_topics;
