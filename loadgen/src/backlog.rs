//! The services' event backlog, read from their Prometheus metrics: how many events are
//! committed but not yet published (`outbox_backlog_events`) and how many chat events
//! message-manager has not yet applied (`consumer_queue_depth`). Used to start measuring only
//! once the set-up's events have been processed, and to report what a run left queued.

use std::time::{Duration, Instant};

const GAUGES: [&str; 2] = ["outbox_backlog_events", "consumer_queue_depth"];

/// The sum of the backlog gauges in a Prometheus text exposition.
pub fn backlog_in(exposition: &str) -> u64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let name_end = line.find(['{', ' '])?;
            if !GAUGES.contains(&&line[..name_end]) {
                return None;
            }
            let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
            Some(value.max(0.0) as u64)
        })
        .sum()
}

/// The summed backlog over every metrics URL (None when one could not be read).
pub async fn backlog(client: &reqwest::Client, urls: &[String]) -> Option<u64> {
    let mut total = 0;
    for url in urls {
        let res = client.get(url).send().await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        total += backlog_in(&res.text().await.ok()?);
    }
    Some(total)
}

/// The sum of the samples of `metric` whose labels contain `label_part`.
pub fn counter_in(exposition: &str, metric: &str, label_part: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(metric) && line[metric.len()..].starts_with('{'))
        .filter(|line| line.contains(label_part))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The events the services' relays have published (and the broker confirmed) so far, and
/// their bodies' bytes, summed over every metrics URL (`events_published_total`,
/// `event_bytes_published_total`).
pub async fn published(client: &reqwest::Client, urls: &[String]) -> Option<(f64, f64)> {
    let (mut events, mut bytes) = (0.0, 0.0);
    for url in urls {
        let text = client.get(url).send().await.ok()?.text().await.ok()?;
        events += counter_in(&text, "events_published_total", "");
        bytes += counter_in(&text, "event_bytes_published_total", "");
    }
    Some((events, bytes))
}

/// Reads the backlog every `every` until `stop`, returning the readings in order.
pub fn sample(
    urls: Vec<String>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut readings = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => break,
            }
            if let Some(b) = backlog(&client, &urls).await {
                readings.push(b);
            }
        }
        readings
    })
}

/// How long until the backlog reads zero (polled every 20 ms), at most `timeout`; `None` if it
/// did not.
pub async fn drain_time(urls: &[String], timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::new();
    while started.elapsed() < timeout {
        if backlog(&client, urls).await == Some(0) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// How often message-manager had to ask chat-manager for a chat's members (its membership view
/// could not vouch for a send), summed over every metrics URL.
pub async fn membership_refreshes(client: &reqwest::Client, urls: &[String]) -> Option<u64> {
    let mut total = 0.0;
    for url in urls {
        let text = client.get(url).send().await.ok()?.text().await.ok()?;
        total += counter_in(&text, "grpc_server_requests_total", "GetChatMembers");
    }
    Some(total as u64)
}

/// CPU the processes used over `interval`.
async fn cpu_over(pids: &[u32], interval: Duration) -> Duration {
    let read = || -> Duration {
        pids.iter()
            .filter_map(|p| crate::procs::cpu(&p.to_string()))
            .sum()
    };
    let before = read();
    tokio::time::sleep(interval).await;
    read().saturating_sub(before)
}

/// Waits until every backlog is zero and the `pids` are idle (together under a tenth of a core
/// for half a second: events already taken off a queue are processed too), or until `timeout`
/// passes; returns how long that took and whether it was reached.
pub async fn settle(urls: &[String], pids: &[u32], timeout: Duration) -> (Duration, bool) {
    let started = Instant::now();
    if urls.is_empty() && pids.is_empty() {
        return (Duration::ZERO, true);
    }
    let client = reqwest::Client::new();
    loop {
        if backlog(&client, urls).await == Some(0)
            && cpu_over(pids, Duration::from_millis(500)).await < Duration::from_millis(50)
        {
            return (started.elapsed(), true);
        }
        if started.elapsed() >= timeout {
            return (started.elapsed(), false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_backlog_gauges_only() {
        let text = "\
# HELP outbox_backlog_events Events committed but not yet published.
# TYPE outbox_backlog_events gauge
outbox_backlog_events{service=\"message-manager\"} 1500
outbox_oldest_unsent_age_seconds{service=\"message-manager\"} 2.5
consumer_queue_depth{queue=\"message-manager.chat-events\"} 3
consumer_dead_lettered_total{queue=\"message-manager.chat-events\"} 7
grpc_server_requests_total{method=\"/x\",code=\"Ok\"} 99
";
        assert_eq!(backlog_in(text), 1503);
        assert_eq!(backlog_in("outbox_backlog_events 0\n"), 0);
        assert_eq!(backlog_in(""), 0);
        let counters = "\
grpc_server_requests_total{method=\"/chat.v1.ChatService/GetChatMembers\",code=\"Ok\"} 12
grpc_server_requests_total{method=\"/chat.v1.ChatService/GetChatMembers\",code=\"Unavailable\"} 1
grpc_server_requests_total{method=\"/chat.v1.ChatService/GetChat\",code=\"Ok\"} 5
grpc_server_requests_total_created{method=\"/chat.v1.ChatService/GetChatMembers\"} 1700000000
";
        assert_eq!(
            counter_in(counters, "grpc_server_requests_total", "GetChatMembers"),
            13.0
        );
    }
}
