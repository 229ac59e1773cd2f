-- Tools the registry invokes on an agent's behalf name their HTTP endpoint.
ALTER TABLE tools ADD COLUMN endpoint TEXT;
