//! The split deployment on RabbitMQ with one broker user per process, made by
//! deploy/rabbitmq/create-users: everything works with those rights, and each user is refused
//! what it has no business doing (the gateway publishing events, a service publishing the
//! other's, anyone publishing through the default exchange).

mod support;

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use serde_json::json;
use support::*;

/// Publishes one message to `exchange` as the user of `url`: Ok once confirmed, else why not.
async fn publish_as(url: &str, exchange: &str, routing_key: &str) -> Result<(), String> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let published = async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                b"{}",
                lapin::BasicProperties::default(),
            )
            .await?
            .await
    };
    let result = match tokio::time::timeout(Duration::from_secs(5), published).await {
        Ok(Ok(lapin::Confirmation::Ack(_))) => Ok(()),
        Ok(Ok(other)) => Err(format!("not acknowledged: {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    };
    let _ = conn.close(200, "OK".into()).await;
    result
}

#[tokio::test]
async fn each_process_has_only_the_broker_rights_it_needs() {
    let test = "broker::each_process_has_only_the_broker_rights_it_needs";
    let Some((mut env, guards)) = split_env(test).await else {
        return;
    };
    let Some(users) = testkit::broker_users(
        test,
        testkit::BrokerNames {
            chat_exchange: &env.chat_exchange,
            message_exchange: &env.message_exchange,
            chat_events_queue: &env.chat_events_queue,
            typing_exchange: &env.typing_exchange,
        },
    )
    .await
    else {
        return;
    };
    env.chat_amqp_url = users.chat_manager_url.clone();
    env.amqp_url = users.message_manager_url.clone();
    env.hub_amqp_url = users.api_gateway_url.clone();
    let mut stack = Stack::split(&env).await;
    stack.keep(guards);

    // The whole path works under those rights: a chat and a message, message-manager's view
    // fed by chat events, and a WebSocket fed by both exchanges.
    let customer = new_id();
    let admin = customer_token(&customer);
    let mut socket = stack.ws(&admin).await;
    socket
        .subscribe(&[
            format!("customer_id:{customer}:chat"),
            format!("customer_id:{customer}:messagechat"),
        ])
        .await;
    let (a, b) = (new_id(), new_id());
    let chat = stack
        .post(
            "/chats",
            &admin,
            &chat_body("group", &a, &[&a, &b], "rights"),
        )
        .await
        .ok()
        .clone();
    let send =
        json!({"chat_id": chat["id"], "source": {"type": "agent", "target": a}, "text": "hi"});
    stack
        .post("/chatmessages", &admin, &send.to_string())
        .await
        .ok();
    assert_eq!(
        socket
            .collect("chat_created", 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    assert_eq!(
        socket
            .collect("messagechat_created", 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    let room = stack
        .get(&format!("/chatrooms?owner_id={b}&page_size=10"), &admin)
        .await
        .ok()["result"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let copies = stack
        .get(&format!("/chatroommessages?chatroom_id={room}"), &admin)
        .await;
    assert_eq!(copies.ok()["result"].as_array().unwrap().len(), 1);

    // And nothing beyond them.
    let refused = [
        (
            "the gateway",
            &users.api_gateway_url,
            env.chat_exchange.as_str(),
        ),
        (
            "the gateway",
            &users.api_gateway_url,
            env.message_exchange.as_str(),
        ),
        (
            "message-manager",
            &users.message_manager_url,
            env.chat_exchange.as_str(),
        ),
        (
            "chat-manager",
            &users.chat_manager_url,
            env.message_exchange.as_str(),
        ),
    ];
    let through_default = [
        ("the gateway", &users.api_gateway_url, ""),
        ("chat-manager", &users.chat_manager_url, ""),
        ("message-manager", &users.message_manager_url, ""),
    ];
    let queue = env.chat_events_queue.as_str();
    let attempts = refused
        .iter()
        .chain(&through_default)
        .map(|(who, url, exchange)| async move {
            let key = match exchange.is_empty() {
                true => queue,
                false => "chat_created",
            };
            (who, exchange, publish_as(url, exchange, key).await)
        });
    for (who, exchange, result) in futures_util::future::join_all(attempts).await {
        let err = result.expect_err(&format!("{who} published to {exchange:?}"));
        assert!(
            err.contains("ACCESS_REFUSED"),
            "{who} to {exchange:?}: {err}"
        );
    }
    // The control: each may publish where it does.
    publish_as(&users.chat_manager_url, &env.chat_exchange, "ignored")
        .await
        .unwrap();
    publish_as(&users.message_manager_url, &env.message_exchange, "ignored")
        .await
        .unwrap();
    publish_as(&users.api_gateway_url, &env.typing_exchange, "ignored")
        .await
        .unwrap();
}
