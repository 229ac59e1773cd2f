use super::Harness;
use mesh_store::{BudgetScope, Spend};

fn scope(name: &str, tokens: Option<i64>, cost: Option<i64>) -> BudgetScope {
    BudgetScope {
        scope: format!("{name}-{}", uuid::Uuid::new_v4().simple()),
        token_limit: tokens,
        cost_limit_micros: cost,
    }
}

pub async fn budgets_are_exact_under_concurrency(h: &Harness) {
    let tenant = scope("tenant", Some(10), None);
    let mut calls = Vec::new();
    for _ in 0..25 {
        let (store, tenant) = (h.store.clone(), tenant.clone());
        calls.push(tokio::spawn(async move {
            let one = Spend {
                tokens: 1,
                cost_micros: 5,
            };
            store.budgets.reserve(&[tenant], one).await.unwrap().is_ok()
        }));
    }
    let mut granted = 0;
    for call in calls {
        granted += usize::from(call.await.unwrap());
    }
    assert_eq!(granted, 10, "exactly the limit is reserved, never more");
    let usage = h.store.budgets.budget_usage(&tenant.scope).await.unwrap();
    assert_eq!(
        usage.reserved,
        Spend {
            tokens: 10,
            cost_micros: 50
        }
    );

    // Settling releases the reservation and counts what was used.
    let reserved = Spend {
        tokens: 1,
        cost_micros: 5,
    };
    let used = Spend {
        tokens: 3,
        cost_micros: 7,
    };
    h.store
        .budgets
        .settle(std::slice::from_ref(&tenant.scope), reserved, used)
        .await
        .unwrap();
    let usage = h.store.budgets.budget_usage(&tenant.scope).await.unwrap();
    assert_eq!(
        usage.reserved,
        Spend {
            tokens: 9,
            cost_micros: 45
        }
    );
    assert_eq!(usage.used, used);
}

pub async fn a_reservation_takes_every_scope_or_none(h: &Harness) {
    let task = scope("task", None, Some(100));
    let tier = scope("tier", Some(1_000), None);
    let big = Spend {
        tokens: 10,
        cost_micros: 80,
    };
    let both = [task.clone(), tier.clone()];
    assert_eq!(h.store.budgets.reserve(&both, big).await.unwrap(), Ok(()));
    // The task's cost limit refuses the second: the tier is not charged either.
    let refused = h.store.budgets.reserve(&both, big).await.unwrap();
    assert_eq!(refused, Err(task.scope.clone()));
    let tier_usage = h.store.budgets.budget_usage(&tier.scope).await.unwrap();
    assert_eq!(tier_usage.reserved.tokens, 10);
    // A scope never seen has used nothing.
    let fresh = h.store.budgets.budget_usage("nobody").await.unwrap();
    assert_eq!(fresh.used, Spend::default());
}
