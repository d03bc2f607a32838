//! The dispatcher checks where a webhook points again at every attempt: a webhook that came to
//! point at a private address (stored before the guard, or by a name that resolves elsewhere
//! now) is refused at delivery, and nothing is sent.

use std::time::Duration;

use common::db::{Db, DbOptions, DbTarget};
use webhook_manager::address::AddressPolicy;
use webhook_manager::db::models::{DeliveryRow, WebhookRow};
use webhook_manager::db::queries;
use webhook_manager::dispatch::{DispatchSettings, Dispatcher, Wake};
use webhook_manager::error::WebhookError;

async fn sqlite() -> (Db, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("webhook-dispatch-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = DbTarget::parse(&dir.join("webhook-manager.db").to_string_lossy(), "");
    let db = tokio::task::spawn_blocking(move || {
        Db::connect(
            target,
            webhook_manager::db::MIGRATIONS,
            &DbOptions::default(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    (db, dir)
}

fn webhook(uri: &str) -> WebhookRow {
    let now = common::time::now();
    WebhookRow {
        id: uuid::Uuid::new_v4().to_string(),
        customer_id: uuid::Uuid::new_v4().to_string(),
        name: "stored before the guard".into(),
        uri: uri.to_owned(),
        method: "POST".into(),
        event_types: r#"["chat_created"]"#.into(),
        status: "enabled".into(),
        secret: webhook_manager::signature::generate_secret(),
        tm_create: now,
        tm_update: now,
        tm_delete: common::time::live(),
    }
}

fn pending(webhook: &WebhookRow) -> DeliveryRow {
    let now = common::time::now();
    DeliveryRow {
        id: uuid::Uuid::new_v4().to_string(),
        customer_id: webhook.customer_id.clone(),
        webhook_id: webhook.id.clone(),
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: "chat_created".into(),
        body: r#"{"type":"chat_created","data":{}}"#.into(),
        status: "pending".into(),
        attempts: 0,
        last_status_code: 0,
        last_error: String::new(),
        tm_next_attempt: now,
        tm_retry_from: now,
        tm_create: now,
        tm_update: now,
    }
}

#[tokio::test]
async fn a_private_address_is_refused_at_delivery_and_nothing_is_sent() {
    let (db, dir) = sqlite().await;
    let receiver = testkit::receiver::WebhookReceiver::start().await;
    let hooks = [
        webhook(&receiver.url()),
        webhook(&format!("http://localhost:{}/hook", receiver.addr.port())),
    ];
    let deliveries: Vec<DeliveryRow> = hooks.iter().map(pending).collect();
    let (rows, items) = (hooks.clone(), deliveries.clone());
    db.run(move |conn| {
        for row in &rows {
            queries::insert_webhook(conn, row)?;
        }
        queries::insert_deliveries(conn, &items).map_err(WebhookError::from)
    })
    .await
    .unwrap();

    let settings = DispatchSettings {
        address: AddressPolicy {
            allow_private: false,
        },
        ..DispatchSettings::default()
    };
    let wake = Wake::default();
    let dispatcher = Dispatcher::new(db.clone(), settings, wake.clone()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(dispatcher.run(stopped));
    wake.webhooks(hooks.iter().map(|h| h.id.clone()));

    for (hook, delivery) in hooks.iter().zip(&deliveries) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let row = loop {
            let (w, d) = (hook.id.clone(), delivery.id.clone());
            let row = db
                .run(move |conn| queries::delivery(conn, &w, &d).map_err(WebhookError::from))
                .await
                .unwrap()
                .unwrap();
            if row.status != "pending" || tokio::time::Instant::now() > deadline {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(row.status, "failed", "{row:?}");
        assert_eq!(row.attempts, 1);
        assert!(
            row.last_error.starts_with("uri: ") && row.last_error.contains("resolves to"),
            "{}",
            row.last_error
        );
    }
    assert!(receiver.received().is_empty());
    let _ = stop.send(true);
    let _ = task.await;
    let _ = std::fs::remove_dir_all(dir);
}
