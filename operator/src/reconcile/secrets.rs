//! Reads the Secrets an `Ingester` names, for the driver's credentials
//! ([`ControlAccess`]).
//!
//! Only `get` by name, in the `Ingester`'s namespace: the operator never
//! lists or watches Secrets, so it learns nothing about Secrets no
//! `Ingester` names. Secrets are not watched either: they are read again
//! at every reconcile (at most every poll interval), so a created,
//! fixed or rotated Secret takes effect at the next step.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use super::validate::ValidatedIngester;
use crate::driver::{AccessError, ControlAccess, SecretData};

/// The driver's access to the pods of `v`, from its Secrets. Plain (and
/// no API call) when the spec sets neither TLS nor tokens.
pub async fn control_access(
    client: &Client,
    v: &ValidatedIngester,
) -> Result<ControlAccess, AccessError> {
    let names = ControlAccess::secret_names(v);
    if names.is_empty() {
        return Ok(ControlAccess::plain());
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &v.namespace);
    let mut data = SecretData::new();
    for name in names {
        let secret = api.get_opt(&name).await.map_err(|e| AccessError::Read {
            name: format!("{}/{name}", v.namespace),
            message: e.to_string(),
        })?;
        let keys = secret.map(|s| {
            let mut out: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            // `stringData` is write-only on a real API server; honour it
            // anyway for objects that carry it.
            for (k, v) in s.string_data.unwrap_or_default() {
                out.entry(k).or_insert_with(|| v.into_bytes());
            }
            out
        });
        data.insert(name, keys);
    }
    ControlAccess::build(v, &data)
}
