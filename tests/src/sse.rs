//! A client of the query service's Server-Sent Events stream.

/// A Server-Sent Events client over a streaming `reqwest` response.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(url: &str) -> Self {
        let response = reqwest::Client::new().get(url).send().await.expect("connect to the event stream");
        assert_eq!(response.status(), 200, "event stream status");
        Self { response, buffer: String::new() }
    }

    /// The next event as (event name, data parsed as JSON); `None` when the stream ends.
    pub async fn next(&mut self) -> Option<(String, serde_json::Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).expect("event data is JSON")));
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Waits up to `timeout` for an event matching `want`, skipping others.
    pub async fn wait_for(
        &mut self,
        timeout: std::time::Duration,
        want: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> Option<(String, serde_json::Value)> {
        tokio::time::timeout(timeout, async {
            while let Some((name, data)) = self.next().await {
                if want(&name, &data) {
                    return Some((name, data));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}
