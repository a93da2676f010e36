//! The agent's HTTPS endpoint (port 10250) the API server proxies pods/log, exec, attach and portforward to.
