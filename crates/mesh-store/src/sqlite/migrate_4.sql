-- Preemption: a running task asked to hand itself back to a waiting critical task.
ALTER TABLE tasks ADD COLUMN yield_requested INTEGER NOT NULL DEFAULT 0;
