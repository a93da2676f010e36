//! ServiceAccount controller: every active namespace has a `default`
//! ServiceAccount; deleting it brings it back.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

pub async fn run(client: Client) {
    crate::per_namespace::run::<ServiceAccount, _, _>(client, "default", ensure_default).await
}

async fn ensure_default(client: Client, ns: String) {
    let api: Api<ServiceAccount> = Api::namespaced(client, &ns);
    if matches!(api.get_opt("default").await, Ok(Some(_))) {
        return;
    }
    let sa = ServiceAccount { metadata: ObjectMeta { name: Some("default".into()), ..Default::default() }, ..Default::default() };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 409 | 403, .. })) => {}
        Err(e) => tracing::warn!(namespace = ns, "creating default serviceaccount: {e}"),
    }
}
