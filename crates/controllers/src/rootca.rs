//! Root CA publisher: every active namespace has the `kube-root-ca.crt`
//! ConfigMap holding the cluster CA, so pods can verify the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

const NAME: &str = "kube-root-ca.crt";

pub async fn run(client: Client, ca_pem: String) {
    if ca_pem.is_empty() {
        return;
    }
    crate::per_namespace::run::<ConfigMap, _, _>(client, NAME, |client, ns| publish(client, ns, ca_pem.clone())).await
}

async fn publish(client: Client, ns: String, ca_pem: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let data = BTreeMap::from([("ca.crt".to_string(), ca_pem)]);
    let result = match api.get_opt(NAME).await {
        Ok(Some(cm)) if cm.data.as_ref() == Some(&data) => return,
        Ok(Some(mut cm)) => {
            // Someone changed it: put the CA back.
            cm.data = Some(data);
            api.replace(NAME, &PostParams::default(), &cm).await.map(drop)
        }
        Ok(None) => {
            let cm = ConfigMap { metadata: ObjectMeta { name: Some(NAME.into()), ..Default::default() }, data: Some(data), ..Default::default() };
            api.create(&PostParams::default(), &cm).await.map(drop)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 409 | 403, .. })) => {}
        Err(e) => tracing::warn!(namespace = ns, "publishing {NAME}: {e}"),
    }
}
