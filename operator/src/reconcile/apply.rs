//! Server-side apply of the built objects, and deletion of orphans.
//!
//! One field manager (`sluice-operator`), forced: the operator is the
//! owner of every field it sets, and a conflicting manual edit is
//! overwritten on the next reconcile rather than wedging it. Fields it does
//! not set (e.g. defaults the API server filled in) are left alone.
//!
//! Orphans are objects carrying this `Ingester`'s labels and controller
//! owner reference that the current build no longer wants (a disabled
//! PodDisruptionBudget, a renamed Service). Both conditions must hold, so
//! an object someone else labelled alike is never deleted.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{MANAGER, Resources, owned_selector, with_type};
use super::validate::ValidatedIngester;
use crate::Error;

/// Applies every object, in the order [`Resources`] documents.
pub async fn apply_all(client: &Client, v: &ValidatedIngester, r: &Resources) -> Result<(), Error> {
    let Resources {
        config_map,
        headless_service,
        client_service,
        statefulset,
        pdb,
    } = r;
    apply_one(client, v, config_map).await?;
    apply_one(client, v, headless_service).await?;
    apply_one(client, v, client_service).await?;
    apply_one(client, v, statefulset).await?;
    if let Some(pdb) = pdb {
        apply_one(client, v, pdb).await?;
    }
    Ok(())
}

async fn apply_one<K>(client: &Client, v: &ValidatedIngester, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &v.namespace);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(with_type(obj)),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: <K as k8s_openapi::Resource>::KIND,
        name,
        source,
    })?;
    Ok(())
}

/// Deletes owned objects the build no longer wants; returns `Kind/name`
/// of each one deleted.
pub async fn delete_orphans(
    client: &Client,
    v: &ValidatedIngester,
    r: &Resources,
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    let services = [r.headless_service.name_any(), r.client_service.name_any()];
    sweep::<ConfigMap>(client, v, &[r.config_map.name_any()], &mut deleted).await?;
    sweep::<Service>(client, v, &services, &mut deleted).await?;
    sweep::<StatefulSet>(client, v, &[r.statefulset.name_any()], &mut deleted).await?;
    let pdbs: Vec<String> = r.pdb.iter().map(ResourceExt::name_any).collect();
    sweep::<PodDisruptionBudget>(client, v, &pdbs, &mut deleted).await?;
    Ok(deleted)
}

async fn sweep<K>(
    client: &Client,
    v: &ValidatedIngester,
    keep: &[String],
    deleted: &mut Vec<String>,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let api: Api<K> = Api::namespaced(client.clone(), &v.namespace);
    let list = api
        .list(&ListParams::default().labels(&owned_selector(&v.name)))
        .await
        .map_err(|source| Error::ListOrphans { kind, source })?;
    for obj in list.items {
        let name = obj.name_any();
        let ours = obj
            .owner_references()
            .iter()
            .any(|o| o.uid == v.owner.uid && o.controller == Some(true));
        if !ours || keep.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::DeleteOrphan { kind, name, source }),
        }
        deleted.push(format!("{kind}/{name}"));
    }
    Ok(())
}
