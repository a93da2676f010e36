//! gRPC health probes (grpc.health.v1.Health/Check over cleartext HTTP/2),
//! as kubelet's gRPC prober: SERVING is success, anything else a failure.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

const SERVING: u64 = 1;

/// The request body: one length-prefixed gRPC message holding
/// `HealthCheckRequest { service }` (field 1, a string).
pub fn request_frame(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            msg.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        msg.push(len as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// The `status` (field 1, varint) of a framed HealthCheckResponse; 0 (UNKNOWN) when absent.
pub fn response_status(body: &[u8]) -> Option<u64> {
    let msg = body.get(5..)?;
    let mut i = 0;
    while i < msg.len() {
        let key = msg[i];
        i += 1;
        let (field, wire) = (key >> 3, key & 7);
        let varint = |i: &mut usize| -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = *msg.get(*i)?;
                *i += 1;
                v |= ((b & 0x7f) as u64) << shift;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        match wire {
            0 => {
                let v = varint(&mut i)?;
                if field == 1 {
                    return Some(v);
                }
            }
            2 => {
                let len = varint(&mut i)? as usize;
                i += len;
            }
            _ => return None,
        }
    }
    Some(0)
}

fn status_name(s: u64) -> &'static str {
    match s {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

pub async fn check(ip: Option<IpAddr>, port: i32, service: &str, timeout: Duration) -> Result<String, String> {
    let ip = ip.ok_or("the pod has no IP yet")?;
    let addr = std::net::SocketAddr::new(ip, port as u16);
    let run = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("error: failed to connect service at \"{addr}\": {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.map_err(|e| format!("error: failed to connect service at \"{addr}\": {e}"))?;
        let conn = tokio::spawn(conn);
        let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "kube-probe/1.33")
            .body(Full::new(Bytes::from(request_frame(service))))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("error: health rpc probe failed: {e}"))?;
        let mut grpc_status = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut body = Vec::new();
        let mut b = resp.into_body();
        while let Some(frame) = b.frame().await {
            let frame = frame.map_err(|e| format!("error: health rpc probe failed: {e}"))?;
            if let Some(t) = frame.trailers_ref() {
                grpc_status = t.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_string).or(grpc_status);
            } else if let Ok(d) = frame.into_data() {
                body.extend_from_slice(&d);
            }
        }
        conn.abort();
        if let Some(code) = grpc_status.filter(|c| c != "0") {
            return Err(format!("error: health rpc probe failed: rpc error: code = {code}"));
        }
        match response_status(&body) {
            Some(SERVING) => Ok(String::new()),
            Some(s) => Err(format!("service unhealthy (responded with \"{}\")", status_name(s))),
            None => Err("error: health rpc probe failed: malformed response".into()),
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout: health rpc did not complete within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(request_frame(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(request_frame("ab"), vec![0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']);
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(response_status(&[0, 0]), None);
    }

    /// A real HTTP/2 gRPC health server on loopback answering SERVING for "" and NOT_SERVING otherwise.
    #[tokio::test]
    async fn checks_a_local_health_server() {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (s, _) = listener.accept().await.unwrap();
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let status = if body.len() > 5 { 2u8 } else { 1u8 };
                    let frame = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                    let resp = http::Response::builder().header("content-type", "application/grpc").header("grpc-status", "0").body(Full::new(frame)).unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(s), svc).await;
            }
        });
        let ip = Some("127.0.0.1".parse().unwrap());
        assert_eq!(check(ip, port as i32, "", Duration::from_secs(2)).await, Ok(String::new()));
        assert_eq!(check(ip, port as i32, "other", Duration::from_secs(2)).await, Err("service unhealthy (responded with \"NOT_SERVING\")".into()));
        server.await.unwrap();
    }
}
