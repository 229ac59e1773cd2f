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
                tools_lifecycle, keys_lifecycle, rejected_writes_leave_nothing,
                concurrent_appends_never_fork, tampering_is_detected, events_for_task_timeline);
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
