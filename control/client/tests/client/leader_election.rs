//! `LeaderElector` against the real apiserver (in process): one holder at a time, takeover
//! only after the Lease expires or is released.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use wasmkube_client::{LeaderElectionConfig, LeaderElector};

use wasmkube_apiserver::testing::TestApiserver;

const DEADLINE: Duration = Duration::from_secs(60);

fn config(identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(100),
        ..LeaderElectionConfig::new("kube-system", "test-lease", identity)
    }
}

async fn holder(client: &kube::Client) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    Ok(leases
        .get("test-lease")
        .await?
        .spec
        .and_then(|s| s.holder_identity))
}

#[tokio::test]
async fn a_held_lease_is_taken_over_only_after_it_expires() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    let mut a = LeaderElector::new(client.clone(), config("a"))?;
    let mut b = LeaderElector::new(client.clone(), config("b"))?;

    assert!(
        a.try_acquire_or_renew().await?,
        "the first candidate creates the lease"
    );
    assert!(
        !b.try_acquire_or_renew().await?,
        "a fresh lease is not taken over"
    );
    assert!(a.try_acquire_or_renew().await?, "the holder renews");
    assert_eq!(b.observed_holder(), Some("a"));

    // `a` stops renewing (as if it died); `b` takes over once the lease has gone stale.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if b.try_acquire_or_renew().await? {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("b never took over the expired lease");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holder(&client).await?.as_deref(), Some("b"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let spec = leases
        .get("test-lease")
        .await?
        .spec
        .context("lease without spec")?;
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(2));
    // `a` comes back: it sees b's fresh lease and does not grab it.
    assert!(!a.try_acquire_or_renew().await?);
    Ok(())
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    let mut a = LeaderElector::new(client.clone(), config("a"))?;
    let mut b = LeaderElector::new(client.clone(), config("b"))?;
    assert!(a.try_acquire_or_renew().await?);
    assert!(!b.try_acquire_or_renew().await?);
    a.release().await?;
    assert_eq!(holder(&client).await?, None);
    assert!(b.try_acquire_or_renew().await?, "a released lease is free");
    assert_eq!(holder(&client).await?.as_deref(), Some("b"));
    Ok(())
}

#[tokio::test]
async fn racing_candidates_never_both_win() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    for round in 0..5 {
        let name = format!("race-{round}");
        let make = |id: &str| {
            let mut c = config(id);
            c.name = name.clone();
            LeaderElector::new(client.clone(), c)
        };
        let (mut a, mut b, mut c) = (make("a")?, make("b")?, make("c")?);
        let (ra, rb, rc) = tokio::join!(
            a.try_acquire_or_renew(),
            b.try_acquire_or_renew(),
            c.try_acquire_or_renew()
        );
        let winners = [ra?, rb?, rc?].iter().filter(|won| **won).count();
        assert_eq!(winners, 1, "round {round}: {winners} candidates won");
    }
    Ok(())
}

#[tokio::test]
async fn run_publishes_leadership_and_releases_on_shutdown() -> Result<()> {
    let api = TestApiserver::start().await?;
    let client = api.client();
    let elector = LeaderElector::new(client.clone(), config("runner"))?;
    let mut leading = elector.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(DEADLINE, leading.wait_for(|l| *l))
        .await
        .context("never became leader")??;
    assert_eq!(holder(&client).await?.as_deref(), Some("runner"));
    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, task).await??;
    assert!(!*leading.borrow());
    assert_eq!(holder(&client).await?, None, "the lease was not released");
    Ok(())
}
