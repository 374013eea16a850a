//! [`ControlAccess`]: how the driver reaches the pods of one `Ingester`,
//! built from the Secrets its spec names.
//!
//! - **TLS** (`spec.tls`): the driver trusts only the CA from the Secret
//!   (not the system roots) and requires every pod's certificate to name
//!   that pod's stable DNS name, `<pod>.<name>-pods.<ns>.svc.<domain>`, or
//!   the configured `serverName`. It dials the pod's IP (no cluster DNS
//!   needed) and verifies the name, so a certificate of another pod, or of
//!   anything else the CA signed, is refused.
//! - **Client certificate** (`spec.tls.clientAuth`): the driver presents
//!   the operator's own certificate and key, from a `kubernetes.io/tls`
//!   Secret that no pod mounts; the pods require one signed by the client
//!   CA.
//! - **Token** (`spec.auth`): `authorization: Bearer <token>` on every
//!   control call; the token must carry the `control` scope.
//!
//! Building is pure ([`ControlAccess::build`] takes the Secrets' data, the
//! reconciler fetches it), and checks the Secrets the pods mount as well:
//! a missing Secret or key becomes one clear [`AccessError`] on the
//! `Ingester`'s status instead of pods stuck in `ContainerCreating` or a
//! crash loop. Secret *contents* are re-read on every reconcile, so a
//! rotated CA or token takes effect at the next step.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::AsciiMetadataValue;

use crate::reconcile::validate::{SecretKeyRef, ValidatedIngester};

/// The data of the Secrets an `Ingester` names: Secret name → key → bytes.
/// A name mapped to `None` does not exist.
pub type SecretData = BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>;

/// How the driver calls the pods of one `Ingester`. The default is plain
/// text without a token: a single local node needs nothing.
#[derive(Clone, Default)]
pub struct ControlAccess {
    tls: Option<Arc<ControlTls>>,
    token: Option<AsciiMetadataValue>,
}

/// The client side of the pods' TLS.
pub struct ControlTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// FNV-1a of the CA bundle and the client certificate and key:
    /// channels are cached per fingerprint, so a rotated CA or client
    /// certificate gets new connections.
    pub(crate) fingerprint: u64,
    /// Whether the operator presents a client certificate (mTLS).
    client_cert: bool,
    names: ServerNames,
}

enum ServerNames {
    /// `<pod>.<suffix>`: each pod's own DNS name.
    PerPod { suffix: String },
    /// One name for all pods (`spec.tls.serverName`).
    Fixed(String),
}

/// Why the driver cannot be given its credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("Secret {name} ({what}) does not exist in the Ingester's namespace")]
    SecretNotFound { name: String, what: &'static str },
    #[error("Secret {name} has no key {key:?} ({what})")]
    KeyMissing {
        name: String,
        key: String,
        what: &'static str,
    },
    #[error("{secret} ({what}): {reason}")]
    Invalid {
        secret: String,
        what: &'static str,
        reason: String,
    },
    #[error("reading Secret {name}: {message}")]
    Read { name: String, message: String },
}

impl AccessError {
    /// The `Degraded` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AccessError::SecretNotFound { .. } => "SecretNotFound",
            AccessError::KeyMissing { .. } => "SecretKeyMissing",
            AccessError::Invalid { .. } => "SecretInvalid",
            AccessError::Read { .. } => "SecretReadFailed",
        }
    }
}

impl ControlAccess {
    /// Plain text, no token.
    pub fn plain() -> Self {
        Self::default()
    }

    /// The names of the Secrets `v` refers to (what to fetch for
    /// [`Self::build`]), without duplicates.
    pub fn secret_names(v: &ValidatedIngester) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(t) = &v.security.tls {
            names.push(t.secret_name.clone());
            names.push(t.ca.name.clone());
            if let Some(c) = &t.client_auth {
                names.push(c.ca.name.clone());
                names.push(c.operator_cert_secret_name.clone());
            }
        }
        if let Some(a) = &v.security.auth {
            names.push(a.tokens.name.clone());
            names.push(a.control_token.name.clone());
        }
        names.sort();
        names.dedup();
        names
    }

    /// Checks the Secrets of `v` and builds the driver's access from them.
    pub fn build(v: &ValidatedIngester, secrets: &SecretData) -> Result<Self, AccessError> {
        let get = |r: &SecretKeyRef, what: &'static str| -> Result<&[u8], AccessError> {
            let data = secrets
                .get(&r.name)
                .and_then(Option::as_ref)
                .ok_or_else(|| AccessError::SecretNotFound {
                    name: r.name.clone(),
                    what,
                })?;
            data.get(&r.key)
                .map(Vec::as_slice)
                .ok_or_else(|| AccessError::KeyMissing {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    what,
                })
        };
        let tls = match &v.security.tls {
            None => None,
            Some(t) => {
                // The pods need these; a missing one would leave them
                // unable to start, with the reason only in their events.
                for key in ["tls.crt", "tls.key"] {
                    let r = SecretKeyRef {
                        name: t.secret_name.clone(),
                        key: key.into(),
                    };
                    get(&r, "the pods' certificate and key")?;
                }
                let ca = get(&t.ca, "the CA that signed the pods' certificate")?;
                let invalid = |reason: String| AccessError::Invalid {
                    secret: t.ca.to_string(),
                    what: "the CA that signed the pods' certificate",
                    reason,
                };
                // The identity, and its bytes for the fingerprint.
                let (identity, [cert, key]): (_, [&[u8]; 2]) = match &t.client_auth {
                    None => (None, [&[], &[]]),
                    Some(c) => {
                        // The pods load this CA; one that does not parse
                        // would leave them refusing every client.
                        let what = "the CA that signs allowed clients";
                        let client_ca = get(&c.ca, what)?;
                        roots(client_ca).map_err(|reason| AccessError::Invalid {
                            secret: c.ca.to_string(),
                            what,
                            reason,
                        })?;
                        let what = "the operator's client certificate";
                        let key_ref = |key: &str| SecretKeyRef {
                            name: c.operator_cert_secret_name.clone(),
                            key: key.into(),
                        };
                        let cert = get(&key_ref("tls.crt"), what)?;
                        let key = get(&key_ref("tls.key"), what)?;
                        let identity =
                            Identity::parse(cert, key).map_err(|reason| AccessError::Invalid {
                                secret: format!("Secret {}", c.operator_cert_secret_name),
                                what,
                                reason,
                            })?;
                        (Some(identity), [cert, key])
                    }
                };
                let config =
                    client_config(ca, identity).map_err(|reason| match &t.client_auth {
                        // rustls refused the certificate and key together
                        // (e.g. a key type it cannot sign with).
                        Some(c) if reason.starts_with(IDENTITY) => AccessError::Invalid {
                            secret: format!("Secret {}", c.operator_cert_secret_name),
                            what: "the operator's client certificate",
                            reason,
                        },
                        _ => invalid(reason),
                    })?;
                let names = match &t.server_name {
                    Some(n) => ServerNames::Fixed(n.clone()),
                    None => ServerNames::PerPod {
                        suffix: format!(
                            "{}.{}.svc.{}",
                            v.headless_service_name(),
                            v.namespace,
                            v.cluster_domain
                        ),
                    },
                };
                Some(Arc::new(ControlTls {
                    config: Arc::new(config),
                    fingerprint: crate::reconcile::build::fnv1a([ca, cert, key]),
                    client_cert: t.client_auth.is_some(),
                    names,
                }))
            }
        };
        let token = match &v.security.auth {
            None => None,
            Some(a) => {
                get(&a.tokens, "the pods' tokens file")?;
                let raw = get(&a.control_token, "the operator's control token")?;
                Some(bearer(raw).map_err(|reason| AccessError::Invalid {
                    secret: a.control_token.to_string(),
                    what: "the operator's control token",
                    reason,
                })?)
            }
        };
        Ok(Self { tls, token })
    }

    pub fn tls(&self) -> Option<&ControlTls> {
        self.tls.as_deref()
    }

    /// `Bearer <token>`, the `authorization` value of every call.
    pub(crate) fn authorization(&self) -> Option<&AsciiMetadataValue> {
        self.token.as_ref()
    }
}

impl ControlTls {
    /// Whether the driver presents the operator's client certificate.
    pub fn presents_client_cert(&self) -> bool {
        self.client_cert
    }

    /// The name pod `pod`'s certificate must carry.
    pub fn server_name(&self, pod: &str) -> String {
        match &self.names {
            ServerNames::PerPod { suffix } => format!("{pod}.{suffix}"),
            ServerNames::Fixed(n) => n.clone(),
        }
    }
}

impl std::fmt::Debug for ControlAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ControlAccess")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

/// The trust store of the CAs in `pem`.
fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(roots)
}

/// Prefix of the errors about the client certificate in
/// [`client_config`].
const IDENTITY: &str = "client certificate and key: ";

/// The operator's client certificate chain and key, parsed.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    fn parse(cert: &[u8], key: &[u8]) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
        if chain.is_empty() {
            return Err("tls.crt holds no PEM certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
        Ok(Self { chain, key })
    }
}

/// A rustls client trusting only the CAs in `pem`, speaking `h2`, and
/// presenting `identity` when the server asks for a client certificate.
fn client_config(pem: &[u8], identity: Option<Identity>) -> Result<rustls::ClientConfig, String> {
    let roots = roots(pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(i) => builder
            .with_client_auth_cert(i.chain, i.key)
            .map_err(|e| format!("{IDENTITY}{e}"))?,
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// `Bearer <token>`; surrounding whitespace (a trailing newline from
/// `kubectl create secret --from-file`) is dropped.
fn bearer(raw: &[u8]) -> Result<AsciiMetadataValue, String> {
    let t = std::str::from_utf8(raw)
        .map_err(|_| "the token is not UTF-8".to_string())?
        .trim();
    if t.is_empty() {
        return Err("the token is empty".into());
    }
    let mut v = AsciiMetadataValue::try_from(format!("Bearer {t}"))
        .map_err(|_| "the token must be printable ASCII".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ingester_from_yaml;
    use crate::reconcile::validate::{ValidateOptions, validate};

    const SECURE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Ingester
metadata: {name: a, namespace: ns, uid: "u-1"}
spec:
  image: sluice:1
  walVolume: {size: 1Gi}
  objectStore: {local: {}}
  catalog: {sqlite: {}}
  tls: {secretName: a-tls}
  auth: {tokensSecretName: a-tokens, controlTokenSecretName: a-control}
"#;

    /// A self-signed CA made once with openssl for these tests (only its
    /// parsing matters here; the handshakes are tested in tests/pods).
    const CA: &str = include_str!("testdata/ca.pem");

    fn v() -> ValidatedIngester {
        validate(&ingester_from_yaml(SECURE), &ValidateOptions::default()).expect("valid")
    }

    fn data(entries: &[(&str, &[(&str, &str)])]) -> SecretData {
        entries
            .iter()
            .map(|(name, kv)| {
                (
                    name.to_string(),
                    Some(
                        kv.iter()
                            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                            .collect(),
                    ),
                )
            })
            .collect()
    }

    fn complete() -> SecretData {
        data(&[
            (
                "a-tls",
                &[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", CA)],
            ),
            ("a-tokens", &[("tokens", "sha256:… control")]),
            ("a-control", &[("token", "s3cret\n")]),
        ])
    }

    #[test]
    fn complete_secrets_give_tls_and_token() {
        let v = v();
        assert_eq!(
            ControlAccess::secret_names(&v),
            ["a-control", "a-tls", "a-tokens"]
        );
        let a = ControlAccess::build(&v, &complete()).expect("access");
        let tls = a.tls().expect("tls");
        assert_eq!(
            tls.server_name("a-0"),
            "a-0.a-pods.ns.svc.cluster.local",
            "each pod's own DNS name"
        );
        assert_eq!(
            a.authorization().map(|v| v.to_str().expect("ascii")),
            Some("Bearer s3cret"),
            "trailing newline dropped"
        );
        assert!(
            !format!("{a:?}").contains("s3cret"),
            "Debug hides the token"
        );
    }

    #[test]
    fn plain_spec_needs_no_secret() {
        let v = validate(
            &ingester_from_yaml(&SECURE.replace("  tls: {secretName: a-tls}\n", "").replace(
                "  auth: {tokensSecretName: a-tokens, controlTokenSecretName: a-control}\n",
                "",
            )),
            &ValidateOptions::default(),
        )
        .expect("valid");
        assert!(ControlAccess::secret_names(&v).is_empty());
        let a = ControlAccess::build(&v, &SecretData::new()).expect("plain");
        assert!(a.tls().is_none() && a.authorization().is_none());
    }

    #[test]
    fn missing_secrets_and_keys_are_named() {
        let v = v();
        let mut d = complete();
        d.insert("a-control".into(), None);
        let e = ControlAccess::build(&v, &d).expect_err("no control Secret");
        assert_eq!(e.reason(), "SecretNotFound");
        assert!(e.to_string().contains("a-control"), "{e}");

        let mut d = complete();
        d.insert(
            "a-tls".into(),
            data(&[("a-tls", &[("tls.crt", "c"), ("ca.crt", CA)])])["a-tls"].clone(),
        );
        let e = ControlAccess::build(&v, &d).expect_err("no tls.key");
        assert_eq!(e.reason(), "SecretKeyMissing");
        assert!(e.to_string().contains("\"tls.key\""), "{e}");

        let mut d = complete();
        d.insert(
            "a-tls".into(),
            data(&[(
                "a-tls",
                &[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", "junk")],
            )])["a-tls"]
                .clone(),
        );
        let e = ControlAccess::build(&v, &d).expect_err("bad CA");
        assert_eq!(e.reason(), "SecretInvalid");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");

        let mut d = complete();
        d.insert(
            "a-control".into(),
            data(&[("a-control", &[("token", " \n")])])["a-control"].clone(),
        );
        let e = ControlAccess::build(&v, &d).expect_err("empty token");
        assert!(e.to_string().contains("empty"), "{e}");
    }

    const MTLS: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Ingester
metadata: {name: a, namespace: ns, uid: "u-1"}
spec:
  image: sluice:1
  walVolume: {size: 1Gi}
  objectStore: {local: {}}
  catalog: {sqlite: {}}
  tls:
    secretName: a-tls
    clientAuth: {caSecretName: a-clients, operatorCertSecretName: a-op}
"#;

    /// A client certificate and key made once with openssl for these tests.
    const CLIENT_CERT: &str = include_str!("testdata/client.pem");
    const CLIENT_KEY: &str = include_str!("testdata/client.key");

    fn mtls_data(cert: &str, key: &str) -> SecretData {
        data(&[
            (
                "a-tls",
                &[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", CA)],
            ),
            ("a-clients", &[("ca.crt", CA)]),
            ("a-op", &[("tls.crt", cert), ("tls.key", key)]),
        ])
    }

    #[test]
    fn client_certificate_is_read_and_checked() {
        let v = validate(&ingester_from_yaml(MTLS), &ValidateOptions::default()).expect("valid");
        assert_eq!(
            ControlAccess::secret_names(&v),
            ["a-clients", "a-op", "a-tls"]
        );
        let a = ControlAccess::build(&v, &mtls_data(CLIENT_CERT, CLIENT_KEY)).expect("access");
        let tls = a.tls().expect("tls");
        assert!(tls.presents_client_cert());
        // A rotated client certificate gets new channels.
        let other = ControlAccess::build(&v, &mtls_data(&format!("{CLIENT_CERT}\n"), CLIENT_KEY))
            .expect("access");
        assert_ne!(tls.fingerprint, other.tls().expect("tls").fingerprint);

        let mut d = mtls_data(CLIENT_CERT, CLIENT_KEY);
        d.insert("a-op".into(), None);
        let e = ControlAccess::build(&v, &d).expect_err("no Secret");
        assert_eq!(e.reason(), "SecretNotFound");
        assert!(
            e.to_string().contains("a-op") && e.to_string().contains("client certificate"),
            "{e}"
        );

        let mut d = mtls_data(CLIENT_CERT, CLIENT_KEY);
        d.insert(
            "a-op".into(),
            data(&[("a-op", &[("tls.crt", CLIENT_CERT)])])["a-op"].clone(),
        );
        let e = ControlAccess::build(&v, &d).expect_err("no key");
        assert_eq!(e.reason(), "SecretKeyMissing");
        assert!(e.to_string().contains("\"tls.key\""), "{e}");

        let e = ControlAccess::build(&v, &mtls_data(CLIENT_CERT, "junk")).expect_err("bad key");
        assert_eq!(e.reason(), "SecretInvalid");
        assert!(
            e.to_string().contains("tls.key is not a PEM private key"),
            "{e}"
        );
        let e = ControlAccess::build(&v, &mtls_data("junk", CLIENT_KEY)).expect_err("bad cert");
        assert_eq!(e.reason(), "SecretInvalid");
        assert!(
            e.to_string().contains("tls.crt holds no PEM certificate"),
            "{e}"
        );

        let mut d = mtls_data(CLIENT_CERT, CLIENT_KEY);
        d.insert(
            "a-clients".into(),
            data(&[("a-clients", &[("ca.crt", "junk")])])["a-clients"].clone(),
        );
        let e = ControlAccess::build(&v, &d).expect_err("bad client CA");
        assert_eq!(e.reason(), "SecretInvalid");
        assert!(e.to_string().contains("signs allowed clients"), "{e}");
    }
}
