//! What a message may carry: the documented limits on text, medias and addresses.

use common::resources::{AddressJson, MediaJson};
use common::validate;
use proto::message::v1 as pb;

use crate::error::MessageError;

/// Longest `text`, in characters.
pub const MAX_TEXT_CHARS: usize = 65_536;
/// Most medias on one message.
pub const MAX_MEDIAS: usize = 20;
/// Longest string field of an address, in characters.
pub const MAX_ADDRESS_FIELD_CHARS: usize = 1_000;
pub const ADDRESS_TYPES: [&str; 8] = [
    "",
    "agent",
    "conference",
    "email",
    "extension",
    "line",
    "sip",
    "tel",
];

fn invalid(m: String) -> MessageError {
    MessageError::InvalidArgument(m)
}

pub fn check_address(field: &str, a: &pb::Address) -> Result<(), MessageError> {
    if !ADDRESS_TYPES.contains(&a.r#type.as_str()) {
        return Err(MessageError::invalid(format!(
            "{field}.type: must be one of \"\", agent, conference, email, extension, line, sip, tel"
        )));
    }
    for (name, value) in [
        ("target", &a.target),
        ("target_name", &a.target_name),
        ("name", &a.name),
        ("detail", &a.detail),
    ] {
        validate::text(&format!("{field}.{name}"), value, MAX_ADDRESS_FIELD_CHARS)
            .map_err(invalid)?;
    }
    Ok(())
}

/// Checks the text and medias, and returns the medias as stored (JSON).
pub fn check_body(text: &str, medias: &[pb::Media]) -> Result<String, MessageError> {
    validate::text("text", text, MAX_TEXT_CHARS).map_err(invalid)?;
    if medias.len() > MAX_MEDIAS {
        return Err(MessageError::invalid(format!(
            "medias: at most {MAX_MEDIAS}"
        )));
    }
    let mut stored = Vec::with_capacity(medias.len());
    for (i, m) in medias.iter().enumerate() {
        let field = format!("medias[{i}]");
        use pb::media::Kind;
        match &m.kind {
            None => {
                return Err(MessageError::invalid(format!(
                    "{field}: no content for its type"
                )));
            }
            Some(Kind::Address(a)) => check_address(&format!("{field}.address"), a)?,
            Some(Kind::AgentId(id)) => {
                validate::id(&format!("{field}.agent.id"), id).map_err(invalid)?;
            }
            Some(Kind::FileId(id)) => {
                validate::id(&format!("{field}.file_id"), id).map_err(invalid)?;
            }
            Some(Kind::LinkUrl(url)) => {
                validate::http_url(&format!("{field}.link_url"), url).map_err(invalid)?;
            }
        }
        stored.push(MediaJson::from(m.clone()));
    }
    Ok(serde_json::to_string(&stored).expect("medias serialize"))
}

pub fn address_json(a: &pb::Address) -> String {
    serde_json::to_string(&AddressJson::from(a.clone())).expect("address serializes")
}

pub fn address_from_json(s: &str) -> pb::Address {
    serde_json::from_str::<AddressJson>(s)
        .unwrap_or_default()
        .into()
}

pub fn medias_from_json(s: &str) -> Vec<pb::Media> {
    serde_json::from_str::<Vec<MediaJson>>(s)
        .unwrap_or_default()
        .into_iter()
        .map(pb::Media::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::media::Kind;

    fn media(kind: Kind) -> pb::Media {
        pb::Media { kind: Some(kind) }
    }

    #[test]
    fn limits_name_the_field() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert!(
            check_body(&long, &[])
                .unwrap_err()
                .to_string()
                .starts_with("text:")
        );
        assert!(check_body(&"x".repeat(MAX_TEXT_CHARS), &[]).is_ok());
        let many = vec![media(Kind::LinkUrl("https://a.example".into())); MAX_MEDIAS + 1];
        assert!(
            check_body("", &many)
                .unwrap_err()
                .to_string()
                .starts_with("medias:")
        );
    }

    #[test]
    fn medias_must_be_well_formed() {
        let bad = [
            (
                media(Kind::LinkUrl("not a url".into())),
                "medias[0].link_url",
            ),
            (media(Kind::FileId("nope".into())), "medias[0].file_id"),
            (media(Kind::AgentId("nope".into())), "medias[0].agent.id"),
            (pb::Media { kind: None }, "medias[0]"),
            (
                media(Kind::Address(pb::Address {
                    r#type: "fax".into(),
                    ..Default::default()
                })),
                "medias[0].address.type",
            ),
        ];
        for (m, field) in bad {
            let err = check_body("hi", &[m]).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
        let ok = check_body(
            "hi",
            &[media(Kind::FileId(uuid::Uuid::new_v4().to_string()))],
        )
        .unwrap();
        assert!(ok.contains("\"type\":\"file\""));
    }

    #[test]
    fn addresses_round_trip_through_storage() {
        let a = pb::Address {
            r#type: "agent".into(),
            target: "t".into(),
            ..Default::default()
        };
        assert_eq!(address_from_json(&address_json(&a)), a);
        assert!(
            check_address(
                "source",
                &pb::Address {
                    r#type: "tel".into(),
                    ..Default::default()
                }
            )
            .is_ok()
        );
    }
}
