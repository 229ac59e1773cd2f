-- Preemption: a running task asked to hand itself back to a waiting critical task.
ALTER TABLE tasks ADD COLUMN yield_requested BOOLEAN NOT NULL DEFAULT FALSE;
