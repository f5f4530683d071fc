//! Writes decided from the log are stored only on top of what they were decided from, with
//! message ids unique per intended write, and a duplicate answer is checked to be this very
//! write. Against a real nats-server.

use async_nats::jetstream::message::PublishMessage;
use krane_core::codec;
use krane_core::routing::Replaced;
mod common;

use common::{create, open};
use krane_core::command::Command;
use krane_store::commands::message_id;

#[tokio::test]
async fn a_write_lands_only_on_the_sequence_it_was_decided_from() {
    let (_nats, store) = open().await;
    let create = create("gw");
    let delete = Command::delete(&create.key());
    let first = store
        .publish_command_expecting(&create, 0, "test", Replaced::Nothing)
        .await
        .expect("write");
    assert!(first.is_some());
    let stale = store
        .publish_command_expecting(&delete, 0, "test", Replaced::Nothing)
        .await
        .expect("write");
    assert_eq!(
        stale, None,
        "decided from an empty subject, which it no longer is"
    );
    let on_top = store
        .publish_command_expecting(
            &delete,
            first.unwrap_or_default(),
            "test",
            Replaced::Nothing,
        )
        .await
        .expect("write");
    assert!(on_top > first);
}

#[tokio::test]
async fn the_same_command_again_later_is_a_new_write_not_a_duplicate() {
    let (_nats, store) = open().await;
    let create = create("gw");
    let delete = Command::delete(&create.key());
    let one = store
        .publish_command_expecting(&create, 0, "test", Replaced::Nothing)
        .await
        .expect("write");
    let two = store
        .publish_command_expecting(&delete, one.unwrap_or_default(), "test", Replaced::Nothing)
        .await
        .expect("write");
    let three = store
        .publish_command_expecting(&create, two.unwrap_or_default(), "test", Replaced::Nothing)
        .await
        .expect("write");
    assert!(
        three > two,
        "Create → Delete → Create keeps the last Create"
    );
    let latest = store.latest_command(&create.key()).await.expect("read");
    assert_eq!(latest.map(|latest| latest.command), Some(create));
}

#[tokio::test]
async fn a_duplicate_answer_naming_another_write_is_not_taken_for_this_one() {
    let (_nats, store) = open().await;
    let create = create("gw");
    let body = codec::encode(&create).expect("encodes");
    let first = store
        .publish_command_expecting(&create, 0, "test", Replaced::Nothing)
        .await
        .expect("write")
        .expect("stored");
    // Another write that happens to carry the id this Create would get on top of it (an id
    // seen before, as after a purge, or a writer that checks duplicates before conditions).
    let next = first + 1;
    let other = codec::encode(&Command::delete(&create.key())).expect("encodes");
    let message = PublishMessage::build()
        .message_id(message_id(&body, next))
        .payload(other.into());
    store
        .jetstream()
        .send_publish(create.key().command_subject(), message)
        .await
        .expect("publish")
        .await
        .expect("stored");
    let written = store
        .publish_command_expecting(&create, next, "test", Replaced::Nothing)
        .await
        .expect("write");
    assert_eq!(
        written, None,
        "the duplicate names a Delete, not this Create"
    );
}
