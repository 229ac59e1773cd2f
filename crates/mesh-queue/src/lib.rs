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
pub use core::{ApprovalBody, MAX_ENQUEUE_BATCH, QueueConfig, TaskListQuery, TaskQueue};
pub use leases::{
    AwaitBody, ClaimBody, CompleteBody, CompletionItem, CompletionResult, CompletionsBody,
    ExtendBody, FailBody, FailReply, ItemError, MAX_CLAIM_BATCH, MAX_CLAIM_WAIT_MS,
    MAX_COMPLETE_BATCH, PageQuery, spawn_queue_sweeper,
};
pub use routes::{new_task_schema, openapi, router};
