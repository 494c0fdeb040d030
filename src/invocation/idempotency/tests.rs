use super::*;

fn live(_: &str) -> Liveness {
    Liveness::Finished
}

#[tokio::test]
async fn first_claim_owns_then_replays_after_publish() {
    let store = IdempotencyStore::new(10);
    let Claim::Owner(guard) = store.claim("f", "k", live).await else {
        panic!("expected owner")
    };
    guard.publish(Arc::from("e1"));
    match store.claim("f", "k", live).await {
        Claim::Replay(id) => assert_eq!(&*id, "e1"),
        Claim::Owner(_) => panic!("expected replay"),
    }
    // Scoped per function.
    assert!(matches!(store.claim("g", "k", live).await, Claim::Owner(_)));
}

#[tokio::test]
async fn a_waiter_gets_the_published_execution() {
    let store = IdempotencyStore::new(10);
    let Claim::Owner(guard) = store.claim("f", "k", live).await else {
        panic!()
    };
    let s2 = store.clone();
    let waiter = tokio::spawn(async move {
        match s2.claim("f", "k", live).await {
            Claim::Replay(id) => id.to_string(),
            Claim::Owner(_) => "owner".into(),
        }
    });
    tokio::task::yield_now().await;
    guard.publish(Arc::from("e9"));
    assert_eq!(waiter.await.unwrap(), "e9");
}

#[tokio::test]
async fn an_abandoned_claim_hands_ownership_to_a_waiter() {
    let store = IdempotencyStore::new(10);
    let Claim::Owner(guard) = store.claim("f", "k", live).await else {
        panic!()
    };
    let s2 = store.clone();
    let waiter =
        tokio::spawn(async move { matches!(s2.claim("f", "k", live).await, Claim::Owner(_)) });
    tokio::task::yield_now().await;
    drop(guard);
    assert!(waiter.await.unwrap());
}

#[tokio::test]
async fn evicted_executions_and_expired_keys_get_a_fresh_claim() {
    let store = IdempotencyStore::new(10);
    let Claim::Owner(g) = store.claim("f", "k", live).await else {
        panic!()
    };
    g.publish(Arc::from("gone"));
    assert!(matches!(
        store.claim("f", "k", |_| Liveness::Gone).await,
        Claim::Owner(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn keys_expire_after_the_ttl() {
    let store = IdempotencyStore::new(10);
    let Claim::Owner(g) = store.claim("f", "k", live).await else {
        panic!()
    };
    g.publish(Arc::from("e1"));
    tokio::time::advance(IDEMPOTENCY_TTL - Duration::from_secs(1)).await;
    assert!(matches!(
        store.claim("f", "k", live).await,
        Claim::Replay(_)
    ));
    tokio::time::advance(Duration::from_secs(2)).await;
    store.evict_expired();
    assert_eq!(store.len(), 0);
    assert!(matches!(store.claim("f", "k", live).await, Claim::Owner(_)));
}

#[tokio::test]
async fn keys_of_running_executions_survive_the_cap() {
    let store = IdempotencyStore::new(2);
    let running = |id: &str| {
        if id == "e0" {
            Liveness::Running
        } else {
            Liveness::Finished
        }
    };
    for i in 0..5 {
        let Claim::Owner(g) = store.claim("f", &format!("k{i}"), running).await else {
            panic!()
        };
        g.publish(Arc::from(format!("e{i}")));
    }
    match store.claim("f", "k0", running).await {
        Claim::Replay(id) => assert_eq!(&*id, "e0"),
        Claim::Owner(_) => panic!("the running execution's key was evicted"),
    }
    assert!(store.len() <= 3);
}

#[tokio::test]
async fn the_store_stays_within_its_cap() {
    let store = IdempotencyStore::new(3);
    for i in 0..10 {
        let Claim::Owner(g) = store.claim("f", &format!("k{i}"), live).await else {
            panic!()
        };
        g.publish(Arc::from(format!("e{i}")));
        assert!(store.len() <= 3);
    }
    // The newest keys survive.
    assert!(matches!(
        store.claim("f", "k9", live).await,
        Claim::Replay(_)
    ));
}
