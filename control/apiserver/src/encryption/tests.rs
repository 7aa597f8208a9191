use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use wasmkube_store::{RedbStore, Store, StoreConfig};

use super::*;

const SECRET: &str = "/registry/core/secrets/default/db";
const CONFIGMAP: &str = "/registry/core/configmaps/default/cfg";
const PLAIN: &[u8] = br#"{"data":{"password":"c3VwZXItc2VjcmV0LXZhbHVl"}}"#;

fn config(providers: &str) -> EncryptionConfig {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
         - resources: [secrets]\n    providers:\n{providers}"
    );
    EncryptionConfig::parse(&text, Path::new("test.yaml")).unwrap()
}

fn key(kind: &str, name: &str, byte: u8) -> String {
    let secret = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    format!(
        "      - {kind}:\n          keys:\n            - name: {name}\n              secret: {secret}\n"
    )
}

fn open(dir: &Path) -> Arc<dyn Store> {
    RedbStore::open(StoreConfig::new(dir.join("store.redb"))).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_named_resources_are_encrypted_in_the_store_and_read_back_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let raw = open(dir.path());
    let store = EncryptedStore::wrap(Arc::clone(&raw), config(&key("secretbox", "key1", 1)));
    let created = store
        .create(SECRET, Bytes::from_static(PLAIN))
        .await
        .unwrap();
    assert_eq!(created.value, PLAIN, "a write answers the object in clear");
    store
        .create(CONFIGMAP, Bytes::from_static(PLAIN))
        .await
        .unwrap();

    let stored = raw.get(SECRET).await.unwrap().unwrap().value;
    assert!(stored.starts_with(b"k8s:enc:secretbox:v1:key1:"));
    assert!(!contains(&stored, b"c3VwZXItc2VjcmV0"));
    let cm = raw.get(CONFIGMAP).await.unwrap().unwrap().value;
    assert_eq!(
        cm, PLAIN,
        "resources the configuration does not name stay as they are"
    );

    assert_eq!(store.get(SECRET).await.unwrap().unwrap().value, PLAIN);
    let listed = store
        .list(ListOptions {
            prefix: "/registry/core/secrets/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.items[0].value, PLAIN);
}

#[tokio::test]
async fn watches_and_deletes_see_the_clear_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::wrap(open(dir.path()), config(&key("aesgcm", "k", 2)));
    let mut watch = store.watch("/registry/core/secrets/", 0).await.unwrap();
    let kv = store
        .create(SECRET, Bytes::from_static(PLAIN))
        .await
        .unwrap();
    store
        .update(SECRET, Bytes::from_static(b"{}"), kv.mod_revision)
        .await
        .unwrap();
    let (prev, _) = store.delete(SECRET, None).await.unwrap();
    assert_eq!(prev.value, &b"{}"[..]);
    match watch.next().await.unwrap() {
        Event::Put { kv, prev: None } => assert_eq!(kv.value, PLAIN),
        other => panic!("{other:?}"),
    }
    match watch.next().await.unwrap() {
        Event::Put { kv, prev: Some(p) } => {
            assert_eq!(kv.value, &b"{}"[..]);
            assert_eq!(p.value, PLAIN);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(watch.next().await.unwrap(), Event::Delete { .. }));
}

#[tokio::test]
async fn a_new_first_key_reads_the_old_and_re_encrypts_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let raw = open(dir.path());
    let old = EncryptedStore::wrap(Arc::clone(&raw), config(&key("aescbc", "key1", 1)));
    let kv = old.create(SECRET, Bytes::from_static(PLAIN)).await.unwrap();

    let rotated = format!(
        "{}{}",
        key("secretbox", "key2", 2),
        key("aescbc", "key1", 1)
    );
    let new = EncryptedStore::wrap(Arc::clone(&raw), config(&rotated));
    assert_eq!(new.get(SECRET).await.unwrap().unwrap().value, PLAIN);
    assert!(
        new.is_stale(SECRET, kv.mod_revision).await,
        "read with the old key"
    );
    assert!(!old.is_stale(SECRET, kv.mod_revision).await);
    new.update(SECRET, Bytes::from_static(PLAIN), kv.mod_revision)
        .await
        .unwrap();
    let stored = raw.get(SECRET).await.unwrap().unwrap();
    assert!(!new.is_stale(SECRET, stored.mod_revision).await);
    assert!(
        stored.value.starts_with(b"k8s:enc:secretbox:v1:key2:"),
        "rewritten with the new key"
    );

    // Once every object is rewritten the old key can go.
    let only_new = EncryptedStore::wrap(Arc::clone(&raw), config(&key("secretbox", "key2", 2)));
    assert_eq!(only_new.get(SECRET).await.unwrap().unwrap().value, PLAIN);
}

#[tokio::test]
async fn identity_reads_what_was_stored_before_encryption_and_without_it_reads_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let raw = open(dir.path());
    raw.create(SECRET, Bytes::from_static(PLAIN)).await.unwrap();
    let with_identity = format!("{}      - identity: {{}}\n", key("secretbox", "key1", 1));
    let store = EncryptedStore::wrap(Arc::clone(&raw), config(&with_identity));
    assert_eq!(store.get(SECRET).await.unwrap().unwrap().value, PLAIN);

    let strict = EncryptedStore::wrap(Arc::clone(&raw), config(&key("secretbox", "key1", 1)));
    let e = strict.get(SECRET).await.unwrap_err().to_string();
    assert!(e.contains("no identity provider"), "{e}");

    let other = EncryptedStore::wrap(Arc::clone(&raw), config(&key("secretbox", "x", 9)));
    let kv = raw.get(SECRET).await.unwrap().unwrap();
    strict
        .update(SECRET, Bytes::from_static(PLAIN), kv.mod_revision)
        .await
        .unwrap();
    let e = other.get(SECRET).await.unwrap_err().to_string();
    assert!(e.contains("k8s:enc:secretbox:v1:key1:"), "{e}");
    assert!(
        e.contains("removed from the EncryptionConfiguration"),
        "{e}"
    );
}

#[test]
fn identity_first_writes_in_clear() {
    let c = config(&format!(
        "      - identity: {{}}\n{}",
        key("aesgcm", "k", 1)
    ));
    assert!(c.applies_to("", "secrets"));
    let chain = c.chain_for_key(SECRET).unwrap();
    let stored = chain.encrypt(SECRET, Bytes::from_static(PLAIN)).unwrap();
    assert_eq!(stored, PLAIN);
}

#[test]
fn resources_match_as_kubernetes_names_them() {
    let text = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
                resources:\n  - resources: [secrets, deployments.apps, '*.batch']\n    \
                providers: [{identity: {}}]\n  - resources: ['*.*']\n    providers: [{identity: {}}]\n";
    let c = EncryptionConfig::parse(text, Path::new("c.yaml")).unwrap();
    assert!(Arc::ptr_eq(
        c.chain_for_key("/registry/core/secrets/ns/a").unwrap(),
        c.chain_for_key("/registry/apps/deployments/ns/a").unwrap()
    ));
    assert!(Arc::ptr_eq(
        c.chain_for_key("/registry/core/secrets/ns/a").unwrap(),
        c.chain_for_key("/registry/batch/jobs/ns/a").unwrap()
    ));
    assert!(!Arc::ptr_eq(
        c.chain_for_key("/registry/core/secrets/ns/a").unwrap(),
        c.chain_for_key("/registry/core/configmaps/ns/a").unwrap()
    ));
    assert!(
        !c.applies_to("", "secrets"),
        "identity only transforms nothing"
    );
}

#[test]
fn mistakes_in_the_file_say_what_to_fix() {
    let head = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
    for (body, says) in [
        (
            "resources:\n  - resources: [secrets]\n    providers: [{kms: {name: x}}]\n",
            "kms providers are not supported",
        ),
        (
            "resources:\n  - resources: [secrets]\n    providers: [{aescbc: {keys: [{name: k, secret: AAAA}]}}]\n",
            "must be 16, 24 or 32 bytes",
        ),
        (
            "resources:\n  - resources: [secrets]\n    providers: [{aescbc: {keys: [{name: k, secret: '!!'}]}}]\n",
            "not base64",
        ),
        (
            "resources:\n  - resources: [secrets]\n    providers: [{identity: {}, aescbc: {keys: []}}]\n",
            "exactly one",
        ),
        (
            "resources:\n  - resources: [secrets]\n    providers: []\n",
            "at least one",
        ),
        (
            "resources:\n  - resources: [secrets]\n    providers: [{identity: {}}]\n  - resources: [secrets]\n    providers: [{identity: {}}]\n",
            "named twice",
        ),
        (
            "resources:\n  - resources: ['sec*']\n    providers: [{identity: {}}]\n",
            "wildcard",
        ),
        (
            "resources:\n  - resources: [secrets]\n    providers: [{aesgcm: {keys: [{name: 'a:b', secret: AAAA}]}}]\n",
            "no ':'",
        ),
    ] {
        let e = EncryptionConfig::parse(&format!("{head}{body}"), Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{body}: {e}");
        assert!(e.starts_with("encryption provider config c.yaml: "), "{e}");
    }
    let e = EncryptionConfig::parse("apiVersion: v1\nkind: ConfigMap\n", Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected apiVersion apiserver.config.k8s.io/v1"),
        "{e}"
    );
}

#[test]
fn a_new_cluster_gets_a_private_default_that_encrypts_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let c = EncryptionConfig::load_or_create_default(dir.path()).unwrap();
    assert!(c.applies_to("", "secrets"));
    assert!(!c.applies_to("", "configmaps"));
    let path = dir.path().join(DEFAULT_CONFIG_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&path).unwrap();
    EncryptionConfig::load_or_create_default(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        first,
        "kept, never regenerated"
    );
}
