//! `spec.tls` and `spec.auth` → [`Security`]: which Secrets the pods mount
//! and which the operator reads for its own calls to the pods.
//!
//! Checks what the API server's schema cannot, or may not have (objects
//! written before the field existed): names that Kubernetes accepts as
//! Secret names and keys, a server name that is a DNS name, and that the
//! operator's own credentials (its plain control token, its client
//! certificate's key) are never in a Secret that every pod mounts. A client
//! CA needs server TLS: `clientAuth` lives inside `spec.tls`, so it cannot
//! be set without it.

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
    /// Mutual TLS; `None`: the pods accept any client.
    pub client_auth: Option<ClientAuthSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSettings {
    /// The CA the pods require client certificates to chain to; mounted
    /// (at [`super::TLS_DIR`] when it is the TLS Secret, else at
    /// [`super::CLIENT_CA_DIR`]).
    pub ca: SecretKeyRef,
    /// The operator's `kubernetes.io/tls` client certificate Secret
    /// (`tls.crt`, `tls.key`); never mounted.
    pub operator_cert_secret_name: String,
}

impl ClientAuthSettings {
    /// Whether the client CA is in a Secret of its own (a volume of its
    /// own) rather than in the pods' TLS Secret.
    pub fn ca_in_own_secret(&self, tls: &TlsSettings) -> bool {
        self.ca.name != tls.secret_name
    }
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
            let client_auth = match &t.client_auth {
                None => None,
                Some(c) => {
                    let ca = SecretKeyRef {
                        name: check_secret_name("tls.clientAuth.caSecretName", &c.ca_secret_name)?,
                        key: secret_key("tls.clientAuth.caKey", &c.ca_key)?,
                    };
                    let operator_cert = check_secret_name(
                        "tls.clientAuth.operatorCertSecretName",
                        &c.operator_cert_secret_name,
                    )?;
                    Some(ClientAuthSettings {
                        ca,
                        operator_cert_secret_name: operator_cert,
                    })
                }
            };
            Some(TlsSettings {
                ca: SecretKeyRef {
                    name: ca_name,
                    key: secret_key("tls.caKey", &t.ca_key)?,
                },
                secret_name,
                server_name,
                client_auth,
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
            let mounted = mounted_secrets(tls.as_ref(), Some(&tokens.name));
            if let Some((_, other)) = mounted.iter().find(|(n, _)| *n == control_token.name) {
                return Err(ValidationError::ControlTokenMounted {
                    name: control_token.name,
                    other,
                });
            }
            Some(AuthSettings {
                tokens,
                control_token,
            })
        }
    };
    // The operator's client key, like its control token, stays out of the
    // pods.
    if let Some(c) = tls.as_ref().and_then(|t| t.client_auth.as_ref()) {
        let mounted = mounted_secrets(tls.as_ref(), auth.as_ref().map(|a| &a.tokens.name));
        if let Some((_, other)) = mounted
            .iter()
            .find(|(n, _)| *n == c.operator_cert_secret_name)
        {
            return Err(ValidationError::OperatorCertMounted {
                name: c.operator_cert_secret_name.clone(),
                other,
            });
        }
    }
    Ok(Security { tls, auth })
}

/// The Secrets every pod mounts, with the field naming each.
fn mounted_secrets<'a>(
    tls: Option<&'a TlsSettings>,
    tokens: Option<&'a String>,
) -> Vec<(&'a str, &'static str)> {
    let mut out = Vec::new();
    if let Some(t) = tls {
        out.push((t.secret_name.as_str(), "tls.secretName"));
        if let Some(c) = &t.client_auth {
            out.push((c.ca.name.as_str(), "tls.clientAuth.caSecretName"));
        }
    }
    if let Some(n) = tokens {
        out.push((n.as_str(), "auth.tokensSecretName"));
    }
    out
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
