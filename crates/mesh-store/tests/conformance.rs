//! One conformance suite, run against every backend: SQLite always, PostgreSQL when
//! `MESH_TEST_POSTGRES_URL` is set (CI sets it and requires it).

mod suite;

macro_rules! conformance {
    ($backend:ident, $harness:path) => {
        mod $backend {
            use super::suite;
            conformance!(@tests $harness;
                tasks_round_trip, task_pagination_and_filters, cancel_cascades_to_descendants,
                task_lifecycle_and_queue_stats, agents_lifecycle, agent_heartbeat_expiry,
                tools_lifecycle, mcp_servers_and_their_tools, keys_lifecycle, rejected_writes_leave_nothing,
                concurrent_appends_never_fork, a_failed_event_write_commits_nothing, tampering_is_detected, events_for_task_timeline,
                claims_follow_types_priority_and_limit, old_low_priority_tasks_age_past_new_ones,
                stale_lease_tokens_are_refused, failures_retry_with_backoff_then_dead_letter,
                expired_leases_go_to_another_agent, retries_wait_for_another_agent_first,
                missed_deadlines_fail_with_slo_timeout,
                idempotency_keys_return_the_first_task, concurrent_claims_never_lease_a_task_twice,
                bus_topics_are_ordered_and_replayable, consumer_groups_deliver_at_least_once,
                cursors_move_with_their_batch, lifecycle_topics_are_read_from_the_log,
                parents_resume_when_subtasks_finish, parents_park_while_children_finish, parents_are_cancelled_while_children_finish,
                concurrent_writes_fail_alone, critical_tasks_preempt_lower_priority_work,
                gated_claims_lease_what_the_gate_allows, concurrent_gated_claims_decide_each_task_once,
                new_work_wakes_waiters, events_are_read_by_action,
                budgets_are_exact_under_concurrency, a_reservation_takes_every_scope_or_none,
                agents_drain_busy_and_probes, projection_cursors_only_move_forward,
                checkpoints_are_stored_once_per_size, a_rewritten_log_fails_its_checkpoints,
                subtree_roots_are_kept_once_and_differences_reported, an_altered_subtree_root_is_a_breach,
                a_checkpoint_beyond_the_log_is_a_breach, batch_inserts_are_all_or_nothing,
                batch_completions_stand_alone);
        }
    };
    (@tests $harness:path; $($test:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let Some(h) = $harness().await else { return };
                suite::$test(&h).await;
            }
        )+
    };
}

conformance!(sqlite, suite::sqlite_harness);
conformance!(postgres, suite::postgres_harness);
