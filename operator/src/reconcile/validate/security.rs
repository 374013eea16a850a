//! `spec.tls` and `spec.auth` → [`Security`]: which Secrets the pods mount
//! and which the operator reads for its own calls to the pods.
//!
//! Checks what the API server's schema cannot, or may not have (objects
//! written before the field existed): names that Kubernetes accepts as
//! Secret names and keys, a server name that is a DNS name, and that the
//! operator's plain control token is never in a Secret that every pod
//! mounts.

use super::ValidationError;
use crate::crd::IngesterSpec;

/// TLS and token settings, each referring to Secrets in the `Ingester`'s
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    pub tls: Option<TlsSettings>,
    pub auth: Option<AuthSettings>,
}

/// One key of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

impl std::fmt::Display for SecretKeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {} key {}", self.name, self.key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The `kubernetes.io/tls` Secret mounted at [`super::TLS_DIR`].
    pub secret_name: String,
    /// The CA the operator verifies the pods against.
    pub ca: SecretKeyRef,
    /// The name required in the pods' certificates; `None`: each pod's DNS
    /// name.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The tokens file (hashes), mounted at [`super::TOKENS_DIR`].
    pub tokens: SecretKeyRef,
    /// The operator's plain `control` token; never mounted.
    pub control_token: SecretKeyRef,
}

/// Checks `spec.tls` and `spec.auth`.
pub(super) fn security(spec: &IngesterSpec) -> Result<Security, ValidationError> {
    let tls = match &spec.tls {
        None => None,
        Some(t) => {
            let secret_name = check_secret_name("tls.secretName", &t.secret_name)?;
            let ca_name = match &t.ca_secret_name {
                Some(n) => check_secret_name("tls.caSecretName", n)?,
                None => secret_name.clone(),
            };
            let server_name = match &t.server_name {
                Some(n) if is_dns_subdomain(n) => Some(n.clone()),
                Some(n) => return Err(ValidationError::ServerName(n.clone())),
                None => None,
            };
            Some(TlsSettings {
                ca: SecretKeyRef {
                    name: ca_name,
                    key: secret_key("tls.caKey", &t.ca_key)?,
                },
                secret_name,
                server_name,
            })
        }
    };
    let auth = match &spec.auth {
        None => None,
        Some(a) => {
            let tokens = SecretKeyRef {
                name: check_secret_name("auth.tokensSecretName", &a.tokens_secret_name)?,
                key: secret_key("auth.tokensKey", &a.tokens_key)?,
            };
            let control_token = SecretKeyRef {
                name: check_secret_name(
                    "auth.controlTokenSecretName",
                    &a.control_token_secret_name,
                )?,
                key: secret_key("auth.controlTokenKey", &a.control_token_key)?,
            };
            // Both of these are mounted into every pod.
            let mounted = [
                (Some(&tokens.name), "auth.tokensSecretName"),
                (tls.as_ref().map(|t| &t.secret_name), "tls.secretName"),
            ];
            for (name, other) in mounted {
                if name == Some(&control_token.name) {
                    return Err(ValidationError::ControlTokenMounted {
                        name: control_token.name,
                        other,
                    });
                }
            }
            Some(AuthSettings {
                tokens,
                control_token,
            })
        }
    };
    Ok(Security { tls, auth })
}

fn check_secret_name(field: &'static str, value: &str) -> Result<String, ValidationError> {
    if is_dns_subdomain(value) {
        Ok(value.to_string())
    } else {
        Err(ValidationError::SecretName {
            field,
            value: value.to_string(),
        })
    }
}

fn secret_key(field: &'static str, value: &str) -> Result<String, ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(ValidationError::SecretKey {
            field,
            value: value.to_string(),
        })
    }
}

/// A DNS-1123 subdomain: what Kubernetes accepts as a Secret name, and a
/// valid TLS server name.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}
