//! `healthCheckNodePort`: for a LoadBalancer Service with
//! externalTrafficPolicy Local, an HTTP server on that port answers 200
//! while this node has endpoints of the Service and 503 otherwise, so an
//! external load balancer sends traffic only to nodes that can serve it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What one health check port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthStatus {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

impl HealthStatus {
    /// Status code and body, as upstream's service health server writes them.
    pub fn response(&self) -> (u16, String) {
        let body = serde_json::json!({
            "service": {"namespace": self.namespace, "name": self.name},
            "localEndpoints": self.local_endpoints,
            "serviceProxyHealthy": true,
        });
        let code = if self.local_endpoints > 0 { 200 } else { 503 };
        (code, body.to_string())
    }
}

/// The running health check servers, one per port.
pub struct HealthServers {
    bind: IpAddr,
    servers: HashMap<u16, (watch::Sender<HealthStatus>, tokio::task::JoinHandle<()>)>,
}

impl HealthServers {
    pub fn new(bind: IpAddr) -> HealthServers {
        HealthServers { bind, servers: HashMap::new() }
    }

    /// Starts servers for new ports, stops those no longer wanted and
    /// updates the counts of the others.
    pub async fn update(&mut self, wanted: &BTreeMap<u16, HealthStatus>) {
        self.servers.retain(|port, (_, task)| {
            let keep = wanted.contains_key(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, status) in wanted {
            if let Some((tx, _)) = self.servers.get(port) {
                tx.send_if_modified(|s| std::mem::replace(s, status.clone()) != *status);
                continue;
            }
            match TcpListener::bind(SocketAddr::new(self.bind, *port)).await {
                Ok(listener) => {
                    let (tx, rx) = watch::channel(status.clone());
                    self.servers.insert(*port, (tx, tokio::spawn(serve(listener, rx))));
                }
                // Tried again on the next update.
                Err(e) => tracing::warn!(port, service = %format!("{}/{}", status.namespace, status.name), "health check port: {e}"),
            }
        }
    }

    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.servers.keys().copied().collect();
        v.sort();
        v
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for (_, task) in self.servers.values() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, status: watch::Receiver<HealthStatus>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        let status = status.clone();
        tokio::spawn(async move {
            // Read the request head (its content does not matter), then answer.
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf[len..])).await {
                    Ok(Ok(n)) if n > 0 => len += n,
                    _ => return,
                }
            }
            let (code, body) = status.borrow().response();
            let reason = if code == 200 { "OK" } else { "Service Unavailable" };
            let reply = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    async fn get(port: u16) -> String {
        let mut c = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn answers_200_with_local_endpoints_and_503_without() {
        let port = free_port();
        let mut servers = HealthServers::new(Ipv4Addr::LOCALHOST.into());
        let mut status = HealthStatus { namespace: "ns".into(), name: "web".into(), local_endpoints: 2 };
        servers.update(&BTreeMap::from([(port, status.clone())])).await;
        let reply = get(port).await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\n{\"service\":{\"namespace\":\"ns\",\"name\":\"web\"},\"localEndpoints\":2,\"serviceProxyHealthy\":true}"), "{reply}");

        status.local_endpoints = 0;
        servers.update(&BTreeMap::from([(port, status)])).await;
        let reply = get(port).await;
        assert!(reply.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\n{\"service\":{\"namespace\":\"ns\",\"name\":\"web\"},\"localEndpoints\":0,\"serviceProxyHealthy\":true}"), "{reply}");

        servers.update(&BTreeMap::new()).await;
        assert!(servers.ports().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_err(), "server stopped");
    }
}
