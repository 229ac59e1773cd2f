//! task-queue (port 5007): durable task scheduling.
//!
//! The queue owns the `tasks` table: a task is created and enqueued in one transaction,
//! with its provenance events. Other services reach it only through [`TaskQueueClient`]
//! (in-process in `mesh up`, HTTP in split mode). It must never call out to other
//! services while holding a transaction.

mod client;
mod core;
mod leases;
mod routes;

pub use client::TaskQueueClient;
pub use core::{ApprovalBody, QueueConfig, TaskListQuery, TaskQueue};
pub use leases::{
    AwaitBody, ClaimBody, CompleteBody, ExtendBody, FailBody, FailReply, MAX_CLAIM_BATCH,
    MAX_CLAIM_WAIT_MS, PageQuery, spawn_queue_sweeper,
};
pub use routes::{new_task_schema, openapi, router};
