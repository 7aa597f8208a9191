use super::*;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::ResourceExt;

fn pod(name: &str, version: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

/// What a handler saw: the change, and whether the store held the change's object as the
/// change describes it at that moment.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Applied {
        name: String,
        old: Option<String>,
        new: String,
        store_has_new: bool,
    },
    Deleted {
        name: String,
        store_has_it: bool,
    },
    Relisted {
        store: Vec<String>,
    },
}

fn names(store: &Store<Pod>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

/// An informer with a handler recording what it saw (and what the store held then).
fn recorded() -> (
    SharedInformer<Pod>,
    Arc<Mutex<Vec<Seen>>>,
    HandlerRegistration,
) {
    let informer = SharedInformer::<Pod>::new(());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let registration = record(&informer, &seen);
    (informer, seen, registration)
}

fn record(informer: &SharedInformer<Pod>, seen: &Arc<Mutex<Vec<Seen>>>) -> HandlerRegistration {
    let store = informer.store();
    let seen = seen.clone();
    informer.add_handler(move |change| {
        let entry = match change {
            Change::Applied { old, new } => Seen::Applied {
                name: new.name_any(),
                old: old.map(|o| o.resource_version().unwrap_or_default()),
                new: new.resource_version().unwrap_or_default(),
                store_has_new: store
                    .get(&ObjectRef::from_obj(&***new))
                    .is_some_and(|held| Arc::ptr_eq(&held, new)),
            },
            Change::Deleted(obj) => Seen::Deleted {
                name: obj.name_any(),
                store_has_it: store.get(&ObjectRef::from_obj(&***obj)).is_some(),
            },
            Change::Relisted => Seen::Relisted {
                store: names(&store),
            },
        };
        lock(&seen).push(entry);
    })
}

fn applied(name: &str, old: Option<&str>, new: &str) -> Seen {
    Seen::Applied {
        name: name.into(),
        old: old.map(Into::into),
        new: new.into(),
        store_has_new: true,
    }
}

fn take(seen: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    std::mem::take(&mut *lock(seen))
}

#[test]
fn a_handler_sees_a_change_only_once_the_store_holds_it() {
    let (informer, seen, _registration) = recorded();
    let mut reflector = informer.reflector().expect("not running");
    reflector.apply(Event::Apply(pod("a", "1")));
    reflector.apply(Event::Apply(pod("a", "2")));
    reflector.apply(Event::Delete(pod("a", "3")));
    assert_eq!(
        take(&seen),
        [
            applied("a", None, "1"),
            applied("a", Some("1"), "2"),
            Seen::Deleted {
                name: "a".into(),
                store_has_it: false
            },
        ]
    );
}

#[test]
fn a_relist_replaces_the_store_at_init_done_and_reports_vanished_objects_as_deleted() {
    let (informer, seen, _registration) = recorded();
    let store = informer.store();
    let mut reflector = informer.reflector().expect("not running");
    reflector.apply(Event::Apply(pod("kept", "1")));
    reflector.apply(Event::Apply(pod("gone", "1")));
    take(&seen);

    // The watch broke; "gone" was deleted and "new" created during the gap.
    reflector.apply(Event::Init);
    reflector.apply(Event::InitApply(pod("kept", "5")));
    reflector.apply(Event::InitApply(pod("new", "6")));
    assert!(
        take(&seen).is_empty(),
        "nothing is reported before InitDone"
    );
    assert_eq!(
        names(&store),
        ["gone", "kept"],
        "the store is not replaced yet"
    );
    assert!(!informer.has_synced(), "no InitDone seen yet");

    reflector.apply(Event::InitDone);
    assert_eq!(names(&store), ["kept", "new"]);
    assert!(informer.has_synced());
    assert_eq!(
        take(&seen),
        [
            applied("kept", Some("1"), "5"),
            applied("new", None, "6"),
            Seen::Deleted {
                name: "gone".into(),
                store_has_it: false
            },
            Seen::Relisted {
                store: vec!["kept".into(), "new".into()]
            },
        ]
    );
    assert!(
        store
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok())
    );
}

#[test]
fn a_handler_added_after_the_first_list_is_replayed_the_store_first() {
    let informer = SharedInformer::<Pod>::new(());
    let mut reflector = informer.reflector().expect("not running");
    reflector.apply(Event::Init);
    reflector.apply(Event::InitApply(pod("a", "1")));
    reflector.apply(Event::InitDone);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let _registration = record(&informer, &seen);
    reflector.apply(Event::Apply(pod("a", "2")));
    assert_eq!(
        take(&seen),
        [
            applied("a", None, "1"),
            Seen::Relisted {
                store: vec!["a".into()]
            },
            applied("a", Some("1"), "2"),
        ]
    );
}

#[test]
fn a_handler_added_before_the_first_list_gets_no_replay() {
    let (informer, seen, _registration) = recorded();
    let mut reflector = informer.reflector().expect("not running");
    reflector.apply(Event::Init);
    reflector.apply(Event::InitDone);
    assert_eq!(take(&seen), [Seen::Relisted { store: vec![] }]);
}

#[test]
fn a_dropped_registration_gets_nothing_more() {
    let (informer, seen, registration) = recorded();
    let mut reflector = informer.reflector().expect("not running");
    reflector.apply(Event::Apply(pod("a", "1")));
    drop(registration);
    reflector.apply(Event::Apply(pod("a", "2")));
    assert_eq!(take(&seen), [applied("a", None, "1")]);
}

#[test]
fn managed_fields_and_the_transform_go_before_the_store_holds_an_object() {
    let informer = SharedInformer::<Pod>::new(());
    informer
        .set_transform(|pod: &mut Pod| pod.spec = None)
        .expect("not running yet");
    let mut reflector = informer.reflector().expect("not running");
    assert!(
        informer.set_transform(|_: &mut Pod| {}).is_err(),
        "a running informer keeps its transform"
    );
    let mut full = pod("a", "1");
    full.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
    full.spec = Some(PodSpec::default());
    reflector.apply(Event::Apply(full));
    let held = informer.store().state();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].metadata.managed_fields, None);
    assert_eq!(held[0].spec, None);
}

#[test]
fn a_subscription_yields_each_change_after_its_observer_ran() {
    let informer = SharedInformer::<Pod>::new(());
    let observed = Arc::new(Mutex::new(Vec::new()));
    let record = observed.clone();
    let mut subscription = informer.subscribe_with(move |change| {
        if let Some(obj) = change.object() {
            lock(&record).push(obj.name_any());
        }
    });
    let mut reflector = informer.reflector().expect("not running");
    reflector.apply(Event::Apply(pod("a", "1")));
    reflector.apply(Event::Delete(pod("a", "2")));
    let first = subscription.next().now_or_never().flatten();
    assert_eq!(first.map(|p| p.resource_version()), Some(Some("1".into())));
    let second = subscription.next().now_or_never().flatten();
    assert_eq!(second.map(|p| p.resource_version()), Some(Some("2".into())));
    assert_eq!(*lock(&observed), ["a", "a"]);
    assert!(subscription.next().now_or_never().is_none(), "nothing else");
}

#[tokio::test]
async fn every_task_waiting_for_the_first_list_wakes() {
    let informer = SharedInformer::<Pod>::new(());
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let informer = informer.clone();
            tokio::spawn(async move { informer.wait_synced().await })
        })
        .collect();
    tokio::task::yield_now().await;
    let mut reflector = informer.reflector().expect("not running");
    reflector.apply(Event::Init);
    reflector.apply(Event::InitDone);
    for waiter in waiters {
        let synced = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await;
        assert!(matches!(synced, Ok(Ok(true))), "{synced:?}");
    }
}
