-- Token and cost budgets: what each scope (a task, a tenant's day, a risk tier's day)
-- has used and has reserved for calls in flight. Cost in micro-units of currency.
CREATE TABLE budget_usage (
  scope TEXT PRIMARY KEY,
  tokens BIGINT NOT NULL DEFAULT 0,
  cost_micros BIGINT NOT NULL DEFAULT 0,
  reserved_tokens BIGINT NOT NULL DEFAULT 0,
  reserved_cost_micros BIGINT NOT NULL DEFAULT 0
);
