//! Signed images against a real registry (Debian's `docker-registry` on loopback):
//! `wasmkube image generate-key-pair | sign | verify`, and the agent's
//! `--image-signature-policy`. A signed image runs in a namespace that asks for signatures;
//! an unsigned one, one signed by another key, and one whose tag was moved after signing
//! (with or without the old signature copied to the new digest) wait with
//! SignatureValidationFailed / ImagePullBackOff and a Warning event saying why, and start
//! once a valid signature appears; a namespace the policy does not name runs unsigned
//! images. A joined `wasmkube agent` with the same policy runs the signed image and refuses
//! the one signed by another key.
//!
//! The independent implementation is Debian's Python with `cryptography` (OpenSSL's
//! ECDSA) and PyNaCl (libsodium's secretbox) plus `hashlib.scrypt` (OpenSSL), speaking the
//! registry API itself: it opens the key files wasmkube writes and checks wasmkube's
//! signatures, and it makes a cosign key pair and a signature (the older `ENCRYPTED COSIGN
//! PRIVATE KEY` type) that wasmkube and the agent accept. (Debian's skopeo 1.9.3 cannot be
//! that client: its sigstore signing and verification are patched out, "Debian-local
//! change: sigstore disabled".)

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::harness::{NodeSpec, TestCluster, TestRegistry, poll_until, which};

const DEADLINE: Duration = Duration::from_secs(180);
const PASSPHRASE: &str = "correct horse battery staple";
/// Debian's Python, which has python3-cryptography and python3-nacl.
const PYTHON: &str = "/usr/bin/python3";

/// Runs `wasmkube image ARGS` in `dir` with the store `dir/store` and the passphrase.
async fn image(dir: &Path, args: &[&str]) -> Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"));
    command.arg("image").args(args).current_dir(dir);
    if matches!(args.first(), Some(&"build" | &"push")) {
        command.arg("--data-dir").arg(dir.join("store"));
    }
    command
        .env_remove("WASMKUBE_DATA_DIR")
        .env_remove("WASMKUBE_REGISTRY_CREDS")
        .env("COSIGN_PASSWORD", PASSPHRASE)
        .env("NO_COLOR", "1");
    command
        .output()
        .await
        .with_context(|| format!("running wasmkube image {args:?}"))
}

async fn image_ok(dir: &Path, args: &[&str]) -> Result<String> {
    let out = image(dir, args).await?;
    ensure!(
        out.status.success(),
        "wasmkube image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn image_fails(dir: &Path, args: &[&str]) -> Result<String> {
    let out = image(dir, args).await?;
    ensure!(
        !out.status.success(),
        "wasmkube image {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stderr)?)
}

/// Builds sample `file` as `name`, pushes it; its digest.
async fn push(dir: &Path, file: &str, name: &str) -> Result<String> {
    let wasm = wasmkube_samples::built("signatures", file)?
        .with_context(|| format!("samples/out/{file} is not built (samples/build --oci)"))?;
    image_ok(dir, &["build", &wasm.display().to_string(), "-t", name]).await?;
    let pushed = image_ok(dir, &["push", name]).await?;
    pushed
        .trim()
        .split('\t')
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no digest in {pushed:?}"))
}

/// The cosign formats in Python (OpenSSL, libsodium) and the registry API with urllib.
const COSIGN_PY: &str = r#"
import base64, hashlib, json, os, sys, textwrap, urllib.request
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
import nacl.secret

def b64(b): return base64.b64encode(b).decode()

def open_key(path, passphrase):
    lines = open(path).read().strip().splitlines()
    assert lines[0] in ("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----",
                        "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----"), lines[0]
    sealed = json.loads(base64.b64decode("".join(lines[1:-1])))
    kdf, cipher = sealed["kdf"], sealed["cipher"]
    assert kdf["name"] == "scrypt" and cipher["name"] == "nacl/secretbox"
    p = kdf["params"]
    key = hashlib.scrypt(passphrase.encode(), salt=base64.b64decode(kdf["salt"]), n=p["N"],
                         r=p["r"], p=p["p"], maxmem=2**28, dklen=32)
    der = nacl.secret.SecretBox(key).decrypt(base64.b64decode(sealed["ciphertext"]),
                                             base64.b64decode(cipher["nonce"]))
    return serialization.load_der_private_key(der, password=None)

def pem(kind, der):
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, "\n".join(textwrap.wrap(b64(der), 64)), kind)

def keygen(prefix, passphrase):
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    salt, nonce = os.urandom(32), os.urandom(24)
    key = hashlib.scrypt(passphrase.encode(), salt=salt, n=32768, r=8, p=1, maxmem=2**28, dklen=32)
    box = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
    sealed = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(salt)},
              "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)}, "ciphertext": b64(box)}
    open(prefix + ".key", "w").write(pem("ENCRYPTED COSIGN PRIVATE KEY", json.dumps(sealed).encode()))
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    open(prefix + ".pub", "w").write(pem("PUBLIC KEY", public))

OCI = "application/vnd.oci.image.manifest.v1+json"

def get(url, accept=None):
    return urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept} if accept else {})).read()

def put_blob(reg, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = urllib.request.urlopen(urllib.request.Request(
        "http://%s/v2/%s/blobs/uploads/" % (reg, repo), method="POST", data=b""))
    location = started.headers["Location"]
    if location.startswith("/"): location = "http://" + reg + location
    location += ("&" if "?" in location else "?") + "digest=" + digest
    urllib.request.urlopen(urllib.request.Request(location, method="PUT", data=data,
                           headers={"Content-Type": "application/octet-stream"}))
    return digest

def sig_tag(digest): return digest.replace(":", "-") + ".sig"

def sign(keyfile, passphrase, reg, repo, digest):
    private = open_key(keyfile, passphrase)
    payload = json.dumps({"critical": {"identity": {"docker-reference": reg + "/" + repo},
                                       "image": {"docker-manifest-digest": digest},
                                       "type": "cosign container image signature"},
                          "optional": {"creator": "python"}}).encode()
    signature = private.sign(payload, ec.ECDSA(hashes.SHA256()))
    layer = put_blob(reg, repo, payload)
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
    config_digest = put_blob(reg, repo, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": len(payload),
                    "digest": layer, "annotations": {"dev.cosignproject.cosign/signature": b64(signature)}}]}).encode()
    urllib.request.urlopen(urllib.request.Request("http://%s/v2/%s/manifests/%s" % (reg, repo, sig_tag(digest)),
                           method="PUT", data=manifest, headers={"Content-Type": OCI}))

def verify(pubfile, reg, repo, digest):
    public = serialization.load_pem_public_key(open(pubfile, "rb").read())
    manifest = json.loads(get("http://%s/v2/%s/manifests/%s" % (reg, repo, sig_tag(digest)), OCI))
    for layer in manifest["layers"]:
        payload = get("http://%s/v2/%s/blobs/%s" % (reg, repo, layer["digest"]))
        assert "sha256:" + hashlib.sha256(payload).hexdigest() == layer["digest"]
        signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        try:
            public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        critical = json.loads(payload)["critical"]
        assert critical["type"] == "cosign container image signature", critical
        assert critical["image"]["docker-manifest-digest"] == digest, critical
        print("verified", critical["identity"]["docker-reference"])
        return
    sys.exit("no signature of %s verifies with %s" % (digest, pubfile))

def same_key(keyfile, passphrase, pubfile):
    private = open_key(keyfile, passphrase)
    public = serialization.load_pem_public_key(open(pubfile, "rb").read())
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert private.public_key().public_bytes(*fmt) == public.public_bytes(*fmt)
    print("same key")

{"keygen": keygen, "sign": sign, "verify": verify, "same-key": same_key}[sys.argv[1]](*sys.argv[2:])
"#;

/// Runs the Python side with `args` in `dir`; its stdout, or the failure.
async fn python(dir: &Path, args: &[&str]) -> Result<std::result::Result<String, String>> {
    ensure!(
        Path::new(PYTHON).is_file(),
        "{PYTHON} is missing: `apt-get install python3 python3-cryptography python3-nacl` \
         (tests/run installs them)"
    );
    let out = tokio::process::Command::new(PYTHON)
        .arg("-c")
        .arg(COSIGN_PY)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .context("running python3")?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    ensure!(
        !stderr.contains("ModuleNotFoundError"),
        "{stderr}\n`apt-get install python3-cryptography python3-nacl` (tests/run installs them)"
    );
    Ok(if out.status.success() {
        Ok(String::from_utf8(out.stdout)?)
    } else {
        Err(stderr)
    })
}

/// The waiting reason of the pod's first container in `namespace`, if it waits.
fn waiting_reason(pod: &Value) -> Option<&str> {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str()
}

/// Whether the pod's first container has started (running or terminated).
fn started(pod: &Value) -> bool {
    let state = &pod["status"]["containerStatuses"][0]["state"];
    state.get("running").is_some() || state.get("terminated").is_some()
}

/// Creates pod `name` in `namespace` running `image` (the hello sample's spec).
async fn run_pod(cluster: &TestCluster, namespace: &str, name: &str, image: &str) -> Result<()> {
    let mut pod = cluster.sample_pod("hello")?;
    pod["metadata"] = json!({"name": name, "namespace": namespace});
    pod["spec"]["containers"][0]["image"] = json!(image);
    pod["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
    cluster.apply_json(&pod).await?;
    Ok(())
}

/// Polls pod `name` in `namespace` until `check` holds; the pod.
async fn wait_pod(
    cluster: &TestCluster,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let check = &check;
    poll_until(
        &format!("pod {namespace}/{name}: {what}"),
        DEADLINE,
        || async {
            let pod = cluster
                .kubectl_json(&["get", "pod", name, "-n", namespace, "-o", "json"])
                .await?;
            Ok(check(&pod).then_some(pod))
        },
    )
    .await
}

/// Waits until pod `name` (in `default`) is refused for its signature: it waits with
/// SignatureValidationFailed or ImagePullBackOff, a Warning `Failed` event says `says`, and
/// another says `Error: SignatureValidationFailed`.
async fn wait_refused(cluster: &TestCluster, name: &str, says: &str) -> Result<()> {
    wait_pod(cluster, "default", name, "refused for its signature", |p| {
        matches!(
            waiting_reason(p),
            Some("SignatureValidationFailed" | "ImagePullBackOff")
        )
    })
    .await?;
    let event = cluster
        .wait_event_where(name, "Failed", DEADLINE, |e| {
            e.message.as_deref().is_some_and(|m| m.contains(says))
        })
        .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains("image signature validation failed"),
        "{message}"
    );
    cluster
        .wait_event_where(name, "Failed", DEADLINE, |e| {
            e.message.as_deref() == Some("Error: SignatureValidationFailed")
        })
        .await?;
    let pod = cluster.pod(name).await?;
    ensure!(
        !crate::harness::container_status(&pod)
            .and_then(|s| s.state)
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some()),
        "{name} must not have started"
    );
    Ok(())
}

/// `curl ARGS`, which must succeed.
async fn curl(args: &[&str]) -> Result<Vec<u8>> {
    ensure!(
        which("curl").is_some(),
        "curl is missing: `apt-get install curl`"
    );
    let out = tokio::process::Command::new("curl")
        .args(["-sSf"])
        .args(args)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

fn path(p: PathBuf) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn a_signed_image_runs_where_the_policy_asks_for_signatures_and_an_unsigned_or_tampered_one_is_refused()
-> Result<()> {
    let registry = TestRegistry::start().await?;
    let reg = registry.addr().to_string();
    let work = tempfile::tempdir()?;
    let dir = work.path();
    image_ok(
        dir,
        &["generate-key-pair", "--output-key-prefix", "trusted"],
    )
    .await?;
    image_ok(dir, &["generate-key-pair", "--output-key-prefix", "other"]).await?;
    python(dir, &["keygen", "python", PASSPHRASE])
        .await?
        .map_err(anyhow::Error::msg)?;
    std::fs::write(
        dir.join("policy.yaml"),
        "rules:\n  - namespaces: [default]\n    keys: [trusted.pub, python.pub]\n",
    )?;

    // Signed by the trusted key with wasmkube; by the Python implementation's key.
    let signed = format!("{reg}/signed/hello:v1");
    push(dir, "hello.wasm", &signed).await?;
    image_ok(dir, &["sign", "--key", "trusted.key", &signed]).await?;
    let by_python = format!("{reg}/python/hello:v1");
    let python_digest = push(dir, "hello.component.wasm", &by_python).await?;
    python(
        dir,
        &[
            "sign",
            "python.key",
            PASSPHRASE,
            &reg,
            "python/hello",
            &python_digest,
        ],
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    // Unsigned; signed by another key.
    let unsigned = format!("{reg}/unsigned/counter:v1");
    push(dir, "counter.wasm", &unsigned).await?;
    let other = format!("{reg}/other/crash:v1");
    push(dir, "crash.wasm", &other).await?;
    image_ok(dir, &["sign", "--key", "other.key", &other]).await?;
    // Signed, then the tag moved to another manifest.
    let moved = format!("{reg}/moved/app:v1");
    let signed_digest = push(dir, "files.wasm", &moved).await?;
    image_ok(dir, &["sign", "--key", "trusted.key", &moved]).await?;
    let moved_digest = push(dir, "memhog.wasm", &moved).await?;
    ensure!(signed_digest != moved_digest, "two samples, two digests");

    // The CLI says the same.
    let ok = image_ok(dir, &["verify", "--key", "trusted.pub", &signed]).await?;
    assert!(ok.starts_with("Verified OK"), "{ok}");
    let ok = image_ok(
        dir,
        &[
            "verify",
            "--key",
            "other.pub",
            "--key",
            "python.pub",
            &by_python,
        ],
    )
    .await?;
    assert!(ok.contains(&python_digest), "{ok}");
    for (key, name, says) in [
        ("trusted.pub", &unsigned, "is not signed"),
        ("trusted.pub", &other, "none of the 1 signature(s)"),
        ("other.pub", &signed, "none of the 1 signature(s)"),
        ("trusted.pub", &moved, "is not signed"),
    ] {
        let error = image_fails(dir, &["verify", "--key", key, name]).await?;
        assert!(error.contains(says), "verify {name} with {key}: {error}");
    }

    let mut cluster = TestCluster::builder()
        .embedded_agent(NodeSpec::named("signatures"))
        .server_arg(format!(
            "--image-signature-policy={}",
            path(dir.join("policy.yaml"))
        ))
        .start()
        .await?;
    run_pod(&cluster, "default", "signed", &signed).await?;
    run_pod(&cluster, "default", "by-python", &by_python).await?;
    run_pod(&cluster, "default", "unsigned", &unsigned).await?;
    run_pod(&cluster, "default", "other-key", &other).await?;
    run_pod(&cluster, "default", "moved", &moved).await?;

    for name in ["signed", "by-python"] {
        wait_pod(&cluster, "default", name, "started", started).await?;
    }
    let logs = cluster.kubectl_ok(&["logs", "signed"]).await?;
    assert!(logs.contains("first-arg"), "{logs}");
    wait_refused(&cluster, "unsigned", "is not signed").await?;
    wait_refused(&cluster, "other-key", "verifies with the trusted key(s)").await?;
    wait_refused(&cluster, "moved", "is not signed").await?;

    // The old signature copied to the new digest's tag: a trusted signature of another
    // manifest.
    let from = format!(
        "http://{reg}/v2/moved/app/manifests/{}",
        signed_digest.replacen(':', "-", 1) + ".sig"
    );
    let to = format!(
        "http://{reg}/v2/moved/app/manifests/{}",
        moved_digest.replacen(':', "-", 1) + ".sig"
    );
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let manifest = curl(&["-H", &format!("Accept: {oci}"), &from]).await?;
    std::fs::write(dir.join("copied.json"), manifest)?;
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {oci}"),
        "--data-binary",
        &format!("@{}", path(dir.join("copied.json"))),
        &to,
    ])
    .await?;
    run_pod(&cluster, "default", "swapped", &moved).await?;
    wait_refused(&cluster, "swapped", "for another manifest").await?;
    let error = image_fails(dir, &["verify", "--key", "trusted.pub", &moved]).await?;
    assert!(error.contains("tampered"), "{error}");

    // A namespace the policy does not name runs unsigned images.
    cluster.kubectl_ok(&["create", "namespace", "open"]).await?;
    run_pod(&cluster, "open", "unsigned", &unsigned).await?;
    wait_pod(&cluster, "open", "unsigned", "started", started).await?;

    // Signed now: the refused pod starts on its next try.
    image_ok(dir, &["sign", "--key", "trusted.key", &unsigned]).await?;
    wait_pod(
        &cluster,
        "default",
        "unsigned",
        "started once signed",
        started,
    )
    .await?;

    // The same policy on a joined `wasmkube agent`.
    let policy = format!("--image-signature-policy={}", path(dir.join("policy.yaml")));
    let joined = cluster
        .join_agent(NodeSpec::named("signatures-joined").arg(&policy))
        .await?;
    let node = cluster.agent_node_name(joined)?;
    for (name, image) in [("joined-signed", &signed), ("joined-other-key", &other)] {
        let mut pod = cluster.sample_pod("hello")?;
        pod["metadata"] = json!({"name": name, "namespace": "default"});
        pod["spec"]["nodeName"] = json!(node);
        pod["spec"]["containers"][0]["image"] = json!(image);
        pod["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        cluster.apply_json(&pod).await?;
    }
    wait_pod(&cluster, "default", "joined-signed", "started", started).await?;
    wait_refused(
        &cluster,
        "joined-other-key",
        "verifies with the trusted key(s)",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn wasmkube_keys_and_signatures_are_cosigns_for_an_independent_implementation() -> Result<()>
{
    let registry = TestRegistry::start().await?;
    let reg = registry.addr().to_string();
    let work = tempfile::tempdir()?;
    let dir = work.path();
    let printed = image_ok(dir, &["generate-key-pair"]).await?;
    assert!(
        printed.contains("cosign.key") && printed.contains("cosign.pub"),
        "{printed}"
    );
    let key = std::fs::read_to_string(dir.join("cosign.key"))?;
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{key}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(dir.join("cosign.key"))?
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Python opens it with the passphrase and finds the public key's pair.
    python(dir, &["same-key", "cosign.key", PASSPHRASE, "cosign.pub"])
        .await?
        .map_err(anyhow::Error::msg)?;
    let error = image_fails(dir, &["generate-key-pair"]).await?;
    assert!(error.contains("--force"), "{error}");

    let name = format!("{reg}/interop/hello:v1");
    let digest = push(dir, "hello.wasm", &name).await?;
    let signed = image_ok(dir, &["sign", "--key", "cosign.key", &name]).await?;
    assert!(signed.contains(&digest), "{signed}");
    // OpenSSL's ECDSA verifies wasmkube's signature of the digest.
    let verified = python(
        dir,
        &["verify", "cosign.pub", &reg, "interop/hello", &digest],
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    assert!(
        verified.contains(&format!("{reg}/interop/hello")),
        "{verified}"
    );
    python(dir, &["keygen", "stranger", PASSPHRASE])
        .await?
        .map_err(anyhow::Error::msg)?;
    let refused = python(
        dir,
        &["verify", "stranger.pub", &reg, "interop/hello", &digest],
    )
    .await?;
    assert!(
        refused.is_err(),
        "a stranger's key verifies nothing: {refused:?}"
    );

    // wasmkube signs with the key Python made (ENCRYPTED COSIGN PRIVATE KEY).
    image_ok(
        dir,
        &[
            "sign",
            "--key",
            "stranger.key",
            &format!("{reg}/interop/hello@{digest}"),
        ],
    )
    .await?;
    python(
        dir,
        &["verify", "stranger.pub", &reg, "interop/hello", &digest],
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    let ok = image_ok(dir, &["verify", "--key", "stranger.pub", &name]).await?;
    assert!(ok.starts_with("Verified OK"), "{ok}");

    // Clear failures.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(["image", "sign", "--key", "cosign.key", &name])
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "wrong")
        .output()
        .await?;
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && error.contains("passphrase is wrong"),
        "{error}"
    );
    let error = image_fails(dir, &["verify", "--key", "cosign.key", &name]).await?;
    assert!(error.contains("PUBLIC KEY"), "{error}");
    let error = image_fails(
        dir,
        &[
            "verify",
            "--key",
            "cosign.pub",
            &format!("{reg}/interop/hello:nope"),
        ],
    )
    .await?;
    assert!(error.contains("not found"), "{error}");
    Ok(())
}
