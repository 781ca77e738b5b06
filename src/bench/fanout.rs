//! `fanout`: one room of `--members` members (default 100). One member creates the room and
//! the others join it; every member keeps one subscribed connection that receives and
//! acknowledges; a few members also send into the room with a window of sends in flight
//! (closed loop, like `throughput`). Each message is delivered to every member but its
//! sender, so the report gives messages/s into the room, deliveries/s out of it, and
//! latency from each send to each member's receipt.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::load::{self, Counters, Sender};
use super::report::{thousands, Report};

/// Members that send as well as receive (fewer if the room is smaller).
const SENDERS: usize = 4;

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<Vec<Report>> {
    let o = ctx.options;
    let members = o.members;
    let senders = SENDERS.min(members - 1);
    let bar = ctx.progress("fanout", None);
    bar.set_message("starting the server and accounts");
    let target = ctx.target().await?;
    let prefix = ctx.prefix();
    let names: Vec<String> = (0..members).map(|i| format!("{prefix}-m{i}")).collect();
    let accounts = target
        .create_accounts(&names, &ctx.password_hash, true)
        .await?;
    let room = format!("#{prefix}-room");

    bar.set_message(format!("{members} members joining {room}"));
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let mut recipients = Vec::with_capacity(members);
    let mut sending = Vec::with_capacity(senders);
    for (i, account) in accounts.iter().enumerate() {
        let Some(token) = &account.token else {
            bail!("bench accounts were made without tokens");
        };
        let mut conn = target.connect_token(token).await?;
        if i == 0 {
            conn.client.room_create(&room, false).await?;
        } else {
            conn.client.room_join(&room).await?;
        }
        load::subscribe_caught_up(&mut conn).await?;
        // The join events of later members arrive here too; the recipient counts only text.
        recipients.push(load::spawn_recipient(
            conn,
            epoch,
            1,
            Arc::clone(&counters),
            stop.clone(),
        ));
        if i < senders {
            // A second connection of the same device: the server does not echo a send to
            // the device that made it, so this member's receiving connection sees only
            // the other members' messages, as a member's client would.
            sending.push(target.connect_token(token).await?.client);
        }
    }
    let start = Instant::now();
    let deadline = start + o.duration;
    let tasks = load::spawn_closed_loop(
        sending
            .into_iter()
            .map(|client| Sender {
                client,
                to: room.clone(),
            })
            .collect(),
        o.body_bytes,
        o.window,
        epoch,
        deadline,
        &counters,
    );
    let status = || {
        format!(
            "{} in, {} out",
            thousands(counters.acked()),
            thousands(counters.delivered())
        )
    };
    load::show_phase(&bar, start, deadline, status).await;
    let acked = load::join_senders(tasks).await?;
    let send_secs = start.elapsed().as_secs_f64();
    let expected = acked * (members as u64 - 1);
    let end = load::end_phase(
        target, &bar, recipients, &counters, &stop, start, o.duration, expected, status,
    )
    .await?;
    let delivered = end.delivered;
    let mut report = end.report("fanout", acked, send_secs);
    report.figure("messages", acked);
    report.figure("deliveries", delivered);
    if delivered < expected {
        report.figure("undelivered", expected - delivered);
    }
    report.param("members", members);
    report.param("senders", senders);
    report.param("window", o.window);
    report.param("body_bytes", o.body_bytes);
    report.param("duration_secs", o.duration.as_secs_f64());
    report.note = Some(format!(
        "acked/s is messages into the room, delivered/s is deliveries out of it (each \
         message goes to the {} other members); latency is from each send to each member's \
         receipt",
        members - 1
    ));
    Ok(vec![report])
}
