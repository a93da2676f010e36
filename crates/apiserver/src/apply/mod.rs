mod fieldpath;
#[cfg(test)]
mod tests {
    #[test]
    fn dump() {
        let d = crate::openapi::kind_schema("apps", "v1", "Deployment").unwrap();
        println!("{}", serde_json::to_string(&d["properties"]["spec"]).unwrap());
        for n in ["io.k8s.api.apps.v1.DeploymentSpec", "io.k8s.api.core.v1.PodSpec", "io.k8s.api.core.v1.Container", "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "io.k8s.apimachinery.pkg.util.intstr.IntOrString", "io.k8s.apimachinery.pkg.api.resource.Quantity", "io.k8s.apimachinery.pkg.runtime.RawExtension"] {
            let s = crate::openapi::definition(n).unwrap();
            let mut s = s.clone();
            if let Some(p) = s.get_mut("properties").and_then(|p| p.as_object_mut()) { for (_, v) in p.iter_mut() { if let Some(o) = v.as_object_mut() { o.remove("description"); } } }
            s.as_object_mut().unwrap().remove("description");
            println!("{n}: {}\n", serde_json::to_string(&s).unwrap());
        }
    }
}
